"""Never commit an input offset before its event is done: a fix to faust's offset commit.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from weakref import WeakSet

log = logging.getLogger(__name__)

__all__ = ["heal_held_heads", "install_commit_guard", "mark_finished", "next_commit"]

_TRACKED_TOPICS: set[str] = set()
_FINISHED: WeakSet = WeakSet()


def mark_finished(message) -> None:
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


def install_commit_guard(tracked_topics: Iterable[str] = ()) -> None:
    """Patch faust's consumer with the rules above (once per process); acks on ``tracked_topics`` count only
    for messages passed to :func:`mark_finished`."""
    from faust.transport.consumer import Consumer

    _TRACKED_TOPICS.update(tracked_topics)
    if getattr(Consumer, "_llmens_commit_guard", False):
        return
    missing = [n for n in ("_new_offset", "ack", "perform_seek", "on_partitions_revoked", "_acked", "_gap",
                           "_unacked_messages", "_committed_offset") if not hasattr(Consumer, n)
               and n not in getattr(Consumer, "__annotations__", {})]
    if missing:
        raise RuntimeError(f"this faust-streaming has no Consumer.{', '.join(missing)}: the commit guard was "
                           "written against 0.15.3 and must be checked before it runs on another version")

    def _new_offset(self, tp):
        acked = self._acked[tp]
        if not acked:
            return None
        ready = self.__dict__.get("_llmens_seeked")
        if ready is None or ready[0] != self.app.consumer_generation_id or tp not in ready[1]:
            return None  # committed offset not read in this generation, or no longer ours
        _merge_gaps(self._gap[tp], acked)  # offsets the fetch never saw (compaction, markers) count as done
        committed = self._committed_offset[tp]
        in_flight = _in_flight(self, tp)
        held = self.__dict__.setdefault("_llmens_held", {})
        head_gap = self.__dict__.setdefault("_llmens_verified_gaps", {}).get((tp, committed), 0)
        end, used = next_commit(acked, committed, in_flight, head_gap=head_gap)
        if end is None:
            if committed is not None and acked[0] > committed and committed not in in_flight and tp not in held:
                held[tp] = (committed, time.monotonic(), acked[0] - committed)
            return None
        held.pop(tp, None)
        self._acked_index[tp].difference_update(acked[:used])
        del acked[:used]
        return end

    original_ack = Consumer.ack

    def ack(self, message) -> bool:
        stale = message.generation_id != self.app.consumer_generation_id
        unfinished = message.topic in _TRACKED_TOPICS and message not in _FINISHED
        if (stale or unfinished) and not message.acked:
            message.acked = True  # skipped, abandoned or from before a rebalance: its re-read copy counts
            self._unacked_messages.discard(message)
            return False
        _FINISHED.discard(message)
        return original_ack(self, message)

    original_perform_seek = Consumer.perform_seek

    async def perform_seek(self) -> None:
        generation = self.app.consumer_generation_id
        await original_perform_seek(self)
        if generation == self.app.consumer_generation_id:
            self.__dict__["_llmens_seeked"] = (generation, frozenset(self.assignment()))

    original_revoked = Consumer.on_partitions_revoked

    async def on_partitions_revoked(self, revoked) -> None:
        self.__dict__.pop("_llmens_seeked", None)  # nothing is committed until the next assignment's seek
        await original_revoked(self, revoked)

    Consumer._new_offset = _new_offset
    Consumer.ack = ack
    Consumer.perform_seek = perform_seek
    Consumer.on_partitions_revoked = on_partitions_revoked
    Consumer._llmens_commit_guard = True


async def heal_held_heads(consumer, hold_s: float = 10.0, rereads: int = 3) -> list[tuple[object, int, str]]:
    """Re-read partitions whose commit is held at a missing head offset; returns ``(tp, offset, action)``.

    A head missing for ``hold_s`` (not acked, not in flight) gets a seek back to it ("redeliver"): the
    records after it are redelivered, which the worker answers idempotently. Still missing after
    ``rereads`` re-reads, there is no record at that offset ("gap") and the commit may pass it.
    """
    held: dict = consumer.__dict__.setdefault("_llmens_held", {})
    healed: dict = consumer.__dict__.setdefault("_llmens_healed", {})
    verified: dict = consumer.__dict__.setdefault("_llmens_verified_gaps", {})
    now, actions = time.monotonic(), []
    for tp, (offset, since, missing) in list(held.items()):
        if consumer._committed_offset.get(tp) != offset or offset in _in_flight(consumer, tp):
            held.pop(tp, None)
        elif now - since >= hold_s:
            held.pop(tp, None)
            if healed.get((tp, offset), 0) >= rereads:
                verified[(tp, offset)] = missing
                actions.append((tp, offset, "gap"))
            else:
                healed[(tp, offset)] = healed.get((tp, offset), 0) + 1
                actions.append((tp, offset, "redeliver"))
                await consumer.seek(tp, offset)
    return actions


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


def _in_flight(consumer, tp) -> list[int]:
    """Offsets of ``tp`` the stream took in this consumer generation and has not acked."""
    generation = consumer.app.consumer_generation_id
    return [m.offset for m in list(consumer._unacked_messages)
            if m.tp == tp and not m.acked and m.generation_id == generation]
