"""The stall watchdog: re-reads partitions whose records were fetched but never reached the agent.

Seen after a rebalance (a worker of two SIGKILLed and restarted): faust drops the rest of a fetched batch
when the group generation changes, the fetch position has moved past those records, and nothing re-fetches
them, so the committed offset stops while the position sits at the end. Three checks in a row with nothing
in flight and the fetch position past what faust delivered trigger a seek back to the committed offset;
redelivery is idempotent (stored decisions are re-emitted). The same seek re-reads a record lost in the
middle of a partition, at which the commit guard holds the commit (:meth:`GuardedConsumer.heal_held_heads`).
"""

from __future__ import annotations

import logging
from typing import Any

from streams.worker import Worker

log = logging.getLogger("llmens.worker")

__all__ = ["StallWatchdog"]


class StallWatchdog:
    """Call :meth:`check` every few seconds with the worker's :class:`GuardedConsumer`."""

    def __init__(self, worker: Worker, topic: str, checks: int = 3) -> None:
        self.w = worker
        self.topic = topic
        self.checks = checks
        self._seen: dict[tuple[Any, int], int] = {}

    async def check(self, consumer: Any) -> list[tuple[Any, int]]:
        """Heal held heads, then seek stalled partitions back; returns the ``(tp, offset)`` seeks done."""
        for tp, offset, action in await consumer.heal_held_heads():
            self.w.counters[f"held_head_{action}"] += 1
            if action == "reseek":
                log.warning("%s: acks to commit but no committed offset known: reading the committed offsets again",
                            tp)
                continue
            log.warning("%s: commit held at offset %d, which never reached the agent: %s", tp, offset,
                        "redelivering from it" if action == "redeliver" else "no record there, passing it")
        if any(self.w.inflight.values()):
            self._seen.clear()
            return []
        seeks = []
        for tp, state in consumer.fetch_states().items():
            if tp.topic != self.topic:
                continue
            target = self._stalled_at(tp, state["position"], consumer.delivered_offset(tp),
                                      consumer.committed_offset(tp))
            if target is not None:
                self.w.counters["stalled_redeliveries"] += 1
                seeks.append((tp, target))
                await consumer.rewind(tp, target)
        return seeks

    def _stalled_at(self, tp: Any, position: int | None, read: int | None, committed: int | None) -> int | None:
        """The offset to re-read from once ``tp`` looked stalled ``checks`` times in a row, else None."""
        delivered = -1 if read is None else read
        if position is None or position <= delivered + 1:
            for key in [k for k in self._seen if k[0] == tp]:
                del self._seen[key]
            return None
        key = (tp, delivered)
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] < self.checks:
            return None
        self._seen.pop(key, None)
        target = committed or 0  # no commit yet: from the partition's first record
        log.warning("%s stalled: fetch position %d, delivered up to %d: redelivering from %d", tp, position,
                    delivered, target)
        return target
