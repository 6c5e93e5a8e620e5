"""Never commit an input offset before its event is done: faust's consumer with a fixed offset commit.

faust-streaming (0.15.3 here) commits the longest run of acked offsets and tolerates one missing offset at the
head of that run (meant for compacted topics). With ``concurrency > 1`` that missing offset is often an
event still being processed: it is committed over, and a worker killed before finishing it loses it for
good (faust-streaming issue #606; the kill test lost decisions in 1 of 11 runs here before this guard).
The rule below caps every commit at the smallest offset still in flight.

A message of an earlier consumer generation that the stream skips after a rebalance is acked by faust as
if done; its ack no longer counts towards a commit (the partition is re-read from the committed offset).

On the agents' topics an ack counts only for a message the agent marked finished (:func:`mark_finished`):
faust's stream also acks the messages it skips while flow is paused around a rebalance, and the worker
abandons a product whose partition was revoked mid-decision. No partition is committed before faust has
read its committed offset in the current generation, nor after it is no longer assigned (faust otherwise
commits acks that arrive after a revocation, for a partition another worker now owns).

faust's one-offset tolerance at the head also commits over a record that was fetched around a rebalance and
never reached the agent (seen in traced kill-test runs). So a missing head offset now holds the commit;
:func:`heal_held_heads` (the worker's watchdog) seeks the partition back to it, and only a head still
missing after that re-read is taken for what faust assumed: no record there (a transaction marker, compaction).
A partition nobody has committed yet has no head to hold, so faust (and this rule, until then) committed over
its first records when a rebalance had dropped them (the two-worker test lost the first 10 and 11 records of
two partitions in CI). Such a partition is now sent back to its first offset whenever faust seeks to the
committed offsets (:meth:`GuardedConsumer.perform_seek`), and that first offset is the head its first commit
must start at (:meth:`GuardedConsumer.commit_floor`).

The guard is :class:`GuardedConsumer`, a subclass of faust's aiokafka consumer handed to faust through its
transport (:mod:`streams.faust_ext.transport`); no faust class is patched. ``kafka.commit_guard: false`` runs
the same consumer with faust's own rule (for the guard-off drill). The faust internals it relies on are
listed, with the version they were checked on, in :mod:`streams.faust_ext.internals`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

__all__ = ["GuardState", "GuardedConsumer", "mark_finished", "next_commit"]

_FINISHED: WeakSet = WeakSet()


def mark_finished(message: Any) -> None:
    """Record that the agent is done with ``message`` (decided, re-emitted, dead-lettered or dropped as old)."""
    _FINISHED.add(message)


def next_commit(acked: list[int], committed: int | None, in_flight: Iterable[int], *,
                head_gap: int = 1) -> tuple[int | None, int]:
    """The offset to commit for one partition, and how many of ``acked`` it uses up.

    ``acked`` is sorted (offsets whose events are done), ``committed`` the last committed offset (the next
    one to read, Kafka's convention) or None, ``in_flight`` offsets taken by the stream and not yet done.
    The commit is the end of the first consecutive run of ``acked``, never past an offset in flight; up to
    ``head_gap`` missing offsets at its head (from ``committed`` on) are passed over (faust: 1).
    """
    if not acked:
        return None, 0
    if committed is not None and acked[0] - committed > head_gap:
        return None, 0
    run = 1
    while run < len(acked) and acked[run] == acked[run - 1] + 1:
        run += 1
    end = acked[run - 1] + 1
    floor = min((o for o in in_flight if committed is None or o >= committed), default=None)
    if floor is not None and floor < end:
        if floor <= acked[0]:
            return None, 0
        run = sum(1 for o in acked[:run] if o < floor)
        end = floor
    return end, run


@dataclass
class GuardState:
    """What the guard remembers per consumer: where commits are allowed and which heads it holds."""

    seeked: tuple[int, frozenset] | None = None
    """(generation, partitions) whose committed offsets faust has read in that generation."""
    held: dict = field(default_factory=dict)
    """tp -> (offset, since, missing): a head offset that never reached the agent holds the commit."""
    healed: dict = field(default_factory=dict)
    """(tp, offset) -> re-reads done for it."""
    verified_gaps: dict = field(default_factory=dict)
    """(tp, offset) -> missing offsets found to be no record after the re-reads."""
    first_offsets: dict = field(default_factory=dict)
    """tp -> its first offset, for partitions rewound with no commit: the head a first commit must start at."""
    unknown_floor: set = field(default_factory=set)
    """Tracked partitions with acks to commit but no floor known (see :meth:`GuardedConsumer._new_offset`)."""
    floor_sought_at: float = 0.0
    """When the watchdog last sought every partition again for an unknown floor."""
    seek_epoch: int = 0
    """Bumped when a seek of the agents' partitions starts and when it ends: a fetch that overlapped one may
    hold records from the position before it (see :meth:`GuardedConsumer._wait_next_records`)."""


class GuardedConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer whose commit never passes an unfinished event (see the module docstring).

    Its transport says whether the guard is on (``commit_guard``) and on which topics an ack counts only
    for messages passed to :func:`mark_finished` (``tracked_topics``). The read-only views at the end
    (:meth:`fetch_states`, :meth:`committed_offset`, :meth:`delivered_offset`) serve the stall watchdog
    and the ``/counters`` page.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = GuardState()
        self._claims: Counter = Counter()
        self._revoking: set = set()
        self.stale_fetches_dropped = 0
        self.gaps_seen = 0

    def claim(self, tp) -> Callable[[], None] | None:
        """Hold ``tp`` while a decision is stored and emitted; None when it is no longer ours.

        A revocation waits (up to half the rebalance timeout) until every claim on the partition is
        released, so the partition's next owner recovers a table that holds the decision: without it a
        product whose decision was being written while the partition moved was decided again, under
        another DS model, by the new owner (5 conflicting copies in a 10,000-product drill).
        """
        if tp in self._revoking or tp not in self.assignment():
            return None
        self._claims[tp] += 1

        def release() -> None:
            self._claims[tp] -= 1
            if self._claims[tp] <= 0:
                del self._claims[tp]

        return release

    async def _wait_for_claims(self, tps: Iterable) -> None:
        deadline = time.monotonic() + max(1.0, float(self.app.conf.broker_rebalance_timeout) / 2)
        while any(self._claims.get(tp) for tp in tps):
            if time.monotonic() > deadline:
                log.warning("revoking %s with decisions still being written", sorted(map(str, tps)))
                return
            await asyncio.sleep(0.005)

    @property
    def guard_on(self) -> bool:
        return bool(getattr(self.transport, "commit_guard", True))

    @property
    def tracked_topics(self) -> frozenset[str]:
        return frozenset(getattr(self.transport, "tracked_topics", ()))

    def _new_consumer_thread(self):
        thread_class = getattr(self.transport, "consumer_thread_class", None)
        if thread_class is None:
            return super()._new_consumer_thread()
        return thread_class(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp):
        if not self.guard_on:
            return super()._new_offset(tp)
        acked = self._acked[tp]
        if not acked:
            return None
        seeked = self.guard.seeked
        if seeked is None or seeked[0] != self.app.consumer_generation_id or tp not in seeked[1]:
            return None  # committed offset not read in this generation, or no longer ours
        _merge_gaps(self._gap[tp], acked)  # offsets the fetch never saw (compaction, markers) count as done
        committed = self.commit_floor(tp)
        if committed is None and tp.topic in self.tracked_topics and self._resets_to_earliest():
            # every partition faust sought in this generation has a floor (its commit, or its first offset);
            # without one, the first run of acks could start past a record nobody finished (the drill lost
            # p0@286 to a commit 284 -> 294 made before the generation's floors were read)
            self.guard.unknown_floor.add(tp)
            return None
        in_flight = self.in_flight(tp)
        head_gap = self.guard.verified_gaps.get((tp, committed), 0)
        end, used = next_commit(acked, committed, in_flight, head_gap=head_gap)
        if end is None:
            if (committed is not None and acked[0] > committed and committed not in in_flight
                    and tp not in self.guard.held):
                self.guard.held[tp] = (committed, time.monotonic(), acked[0] - committed)
            return None
        self.guard.held.pop(tp, None)
        self._acked_index[tp].difference_update(acked[:used])
        del acked[:used]
        return end

    def ack(self, message) -> bool:
        if not self.guard_on:
            return super().ack(message)
        stale = message.generation_id != self.app.consumer_generation_id
        unfinished = message.topic in self.tracked_topics and message not in _FINISHED
        if (stale or unfinished) and not message.acked:
            message.acked = True  # skipped, abandoned or from before a rebalance: its re-read copy counts
            self._unacked_messages.discard(message)
            return False
        _FINISHED.discard(message)
        return super().ack(message)

    async def perform_seek(self) -> None:
        generation = self.app.consumer_generation_id
        self.guard.seek_epoch += 1
        try:
            await super().perform_seek()
            await self._rewind_uncommitted()
        finally:
            self.guard.seek_epoch += 1
        if generation == self.app.consumer_generation_id:
            self.guard.seeked = (generation, frozenset(self.assignment()))

    async def _wait_next_records(self, timeout: float):
        """faust's fetch, minus the agents' records fetched from a position a seek has since moved.

        faust fetches on the consumer thread and stamps the records with the generation current when the
        fetch *returns*: a batch fetched before a rebalance's seek (or a watchdog's re-read) and handed over
        after it passed as new, and faust took the jump from the sought offset to the batch's first one for
        a compaction gap, counted as done. Committed over, those records were never decided (the failover
        drill lost products this way: ``consumer gap ... 302..305`` and p4@305 gone). Such records are
        dropped here and their partitions sought back to where faust now reads from.
        """
        epoch = self.guard.seek_epoch
        records, active = await super()._wait_next_records(timeout)
        if not records or not self.guard_on or epoch == self.guard.seek_epoch:
            return records, active
        stale = [tp for tp in records if tp.topic in self.tracked_topics]
        if stale:
            log.warning("dropping a fetch that overlapped a seek: %s read again from %s", sorted(map(str, stale)),
                        [self._read_offset.get(tp) for tp in stale])
            self.stale_fetches_dropped += 1
            try:
                await self.rewind_many({tp: self._read_offset.get(tp) for tp in stale})
            except Exception as exc:  # noqa: BLE001 - not re-read: keep them (a gap then holds the commit)
                log.warning("could not seek %s back (%s: %s); keeping the fetch", stale, type(exc).__name__, exc)
                return records, active
            records = {tp: r for tp, r in records.items() if tp not in stale}
        return records, active

    async def _rewind_uncommitted(self) -> None:
        """Send each tracked partition nobody has committed yet back to its first record.

        aiokafka's ``seek_to_committed`` leaves a partition without a commit (or committed at 0) wherever the
        fetcher was, and faust drops a fetched batch when flow stops around a rebalance: the first records of
        such a partition were fetched, dropped and never delivered (seen in the two-worker test under load,
        whose 2-s session timeout makes rebalances mid-stream common). Re-reading them is idempotent. Only
        under faust's default reset policy, "earliest": with "latest" the history is skipped on purpose.
        """
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return
        tps = [tp for tp in self.assignment() if tp.topic in self.tracked_topics and not self._committed_offset.get(tp)]
        if tps:
            await self.rewind_many(dict.fromkeys(tps))

    def _resets_to_earliest(self) -> bool:
        return self.app.conf.consumer_auto_offset_reset == "earliest"

    def commit_floor(self, tp) -> int | None:
        """Where the next commit of ``tp`` must start: its committed offset, else (nothing committed yet) its
        first offset, so that a head lost before the first commit holds the commit as any lost head does."""
        committed = self._committed_offset.get(tp)
        return committed if committed is not None else self.guard.first_offsets.get(tp)

    async def rewind(self, tp, offset: int | None) -> bool:
        """Move the fetch position of ``tp`` to ``offset`` (None: its first record); False when not assigned."""
        return tp in await self.rewind_many({tp: offset})

    async def rewind_many(self, offsets: dict) -> list:
        """:meth:`rewind` for ``{tp: offset or None}``; returns the partitions moved (those still assigned).

        The seeks run on the consumer's own thread: aiokafka's fetcher lives in that thread's event loop,
        while faust's :meth:`seek` calls it from the worker's loop (not thread-safe: it wakes no fetch).
        """
        def aiokafka_tp(tp):
            return TopicPartition(tp.topic, tp.partition)  # aiokafka refuses faust's TP

        async def seek_on_consumer_thread() -> tuple[dict, dict]:
            """``({tp: offset sought}, {tp: first offset})`` for the partitions still assigned."""
            consumer = self._thread._ensure_consumer()
            assigned = consumer.assignment()
            moved = [tp for tp in offsets if aiokafka_tp(tp) in assigned]
            to_start = [tp for tp in moved if not offsets[tp] or offsets[tp] <= 0]
            found = await consumer.beginning_offsets([aiokafka_tp(tp) for tp in to_start]) if to_start else {}
            starts = {tp: found[aiokafka_tp(tp)] for tp in to_start}
            targets = {tp: starts.get(tp, offsets[tp]) for tp in moved}
            # a rebalance may have taken a partition while beginning_offsets was awaited: aiokafka then
            # refuses the seek (IllegalStateError), which crashed the watchdog's timer and the worker with it
            assigned = consumer.assignment()
            targets = {tp: target for tp, target in targets.items() if aiokafka_tp(tp) in assigned}
            for tp, target in targets.items():
                consumer.seek(aiokafka_tp(tp), target)
            return targets, {tp: start for tp, start in starts.items() if tp in targets}

        self.guard.seek_epoch += 1
        try:
            targets, starts = await self._thread.call_thread(seek_on_consumer_thread)
            self.guard.first_offsets.update(starts)
            for tp, target in targets.items():
                self._read_offset[tp] = target if target else None
        finally:
            self.guard.seek_epoch += 1
        return list(targets)

    async def on_partitions_revoked(self, revoked) -> None:
        self.guard.seeked = None  # nothing is committed until the next assignment's seek
        for tp in revoked:
            self.guard.first_offsets.pop(tp, None)
        self._revoking |= set(revoked)
        try:
            await self._wait_for_claims(revoked)
            await super().on_partitions_revoked(revoked)
        finally:
            self._revoking -= set(revoked)

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        """faust counts offsets the fetch jumped over as done (compaction, transaction markers). On the agents'
        topics they are not: the commit holds at the first of them and the watchdog re-reads it
        (:meth:`heal_held_heads`), which passes it only once three re-reads brought no record there."""
        log.warning("consumer gap on %s: offsets %d..%d skipped by the fetch", tp, offset_from, offset_to)
        self.gaps_seen += 1
        if self.guard_on and tp.topic in self.tracked_topics:
            return
        await super()._add_gap(tp, offset_from, offset_to)

    async def heal_held_heads(self, hold_s: float = 10.0, rereads: int = 3) -> list[tuple[Any, int, str]]:
        """Re-read partitions whose commit is held at a missing head offset; returns ``(tp, offset, action)``.

        A head missing for ``hold_s`` (not acked, not in flight) gets a seek back to it ("redeliver"): the
        records after it are redelivered, which the worker answers idempotently. Still missing after
        ``rereads`` re-reads, there is no record at that offset ("gap") and the commit may pass it.
        """
        g, now, actions = self.guard, time.monotonic(), []
        if g.unknown_floor:
            unknown = [tp for tp in g.unknown_floor if self.commit_floor(tp) is None]
            g.unknown_floor.clear()
            if unknown and now - g.floor_sought_at >= hold_s:
                g.floor_sought_at = now
                actions += [(tp, -1, "reseek") for tp in unknown]
                await self.perform_seek()  # reads every committed offset again; uncommitted ones from the start
        for tp, (offset, since, missing) in list(g.held.items()):
            if self.commit_floor(tp) != offset or offset in self.in_flight(tp):
                g.held.pop(tp, None)
            elif now - since >= hold_s:
                g.held.pop(tp, None)
                if g.healed.get((tp, offset), 0) >= rereads:
                    g.verified_gaps[(tp, offset)] = missing
                    actions.append((tp, offset, "gap"))
                else:
                    g.healed[(tp, offset)] = g.healed.get((tp, offset), 0) + 1
                    actions.append((tp, offset, "redeliver"))
                    await self.rewind(tp, offset)
        return actions

    def in_flight(self, tp) -> list[int]:
        """Offsets of ``tp`` the stream took in this consumer generation and has not acked."""
        generation = self.app.consumer_generation_id
        return [m.offset for m in list(self._unacked_messages)
                if m.tp == tp and not m.acked and m.generation_id == generation]

    def committed_offset(self, tp) -> int | None:
        """The offset last committed for ``tp`` (the next one to read), as faust holds it."""
        return self._committed_offset.get(tp)

    def delivered_offset(self, tp) -> int | None:
        """The last offset of ``tp`` faust handed to a stream."""
        return self._read_offset.get(tp)

    def fetch_states(self) -> dict[Any, dict[str, Any]]:
        """``{tp: {"position", "highwater", "paused", "status"}}`` as aiokafka's fetcher sees them; {} when unassigned."""
        try:
            sub = self._thread._consumer._subscription.subscription
            tps = list(sub.assignment.tps)
        except AttributeError:  # not started, not assigned yet, or rebalancing
            return {}
        out = {}
        for tp in tps:
            state = sub.assignment.state_value(tp)
            out[tp] = {"position": state._position, "highwater": state.highwater, "paused": state.paused,
                       "status": str(state._status)}
        return out

    def partition_sets(self) -> dict[str, list[str]]:
        """Assigned, paused and active partitions as ``topic:partition`` strings (diagnostics)."""
        def names(tps: Iterable) -> list[str]:
            return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)

        return {"assigned": names(self.assignment()), "paused": names(self._paused_partitions),
                "active": names(self._active_partitions or ())}


def _merge_gaps(gaps, acked: list[int]) -> None:
    """faust's own step: gap ranges below the highest acked offset join ``acked``, which ends sorted."""
    if gaps:
        top = max(acked)
        spans = sorted(gaps.overlap(0, top), key=lambda iv: iv.begin)
        for iv in spans:
            acked.extend(range(iv.begin, iv.end))
        if spans:
            gaps.chop(0, max(spans[-1].end, top + 1))
    acked[:] = sorted(set(acked))
