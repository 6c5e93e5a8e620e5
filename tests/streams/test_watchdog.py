"""The stall watchdog's rule: three checks with a partition fetched past what reached the agent, none of it in
flight, seek back to its committed offset; a busy partition elsewhere does not hide the stall."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from streams.watchdog import StallWatchdog


class ConsumerState:
    """The read-only views of ``GuardedConsumer`` the watchdog uses, over fixed numbers."""

    def __init__(self, fetch: dict, delivered: dict, committed: dict, in_flight: dict) -> None:
        self.fetch, self.delivered, self.committed, self.flying = fetch, delivered, committed, in_flight
        self.seeks: list = []

    async def heal_held_heads(self):
        return []

    def fetch_states(self):
        return {tp: {"position": pos} for tp, pos in self.fetch.items()}

    def delivered_offset(self, tp):
        return self.delivered.get(tp)

    def committed_offset(self, tp):
        return self.committed.get(tp)

    def in_flight(self, tp):
        return self.flying.get(tp, [])

    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))


async def test_a_stalled_partition_is_re_read_even_while_another_partition_is_busy():
    stalled, busy = TP("updates", 6), TP("updates", 1)
    consumer = ConsumerState(fetch={stalled: 84, busy: 500}, delivered={stalled: None, busy: 480},
                             committed={stalled: 0, busy: 470}, in_flight={busy: [481, 482]})
    worker = SimpleNamespace(counters=defaultdict(float), inflight={"ask_llms": 2})
    dog = StallWatchdog(worker, "updates")
    assert await dog.check(consumer) == [] and await dog.check(consumer) == []
    assert await dog.check(consumer) == [(stalled, 0)] and consumer.seeks == [(stalled, 0)]
    assert worker.counters["stalled_redeliveries"] == 1


async def test_a_partition_that_delivers_or_has_events_in_flight_is_never_sought():
    tp = TP("updates", 2)
    consumer = ConsumerState(fetch={tp: 100}, delivered={tp: 99}, committed={tp: 90}, in_flight={})
    worker = SimpleNamespace(counters=defaultdict(float), inflight={})
    dog = StallWatchdog(worker, "updates")
    for _ in range(5):
        assert await dog.check(consumer) == []
    consumer.fetch[tp], consumer.flying[tp] = 150, [100]
    for _ in range(5):
        assert await dog.check(consumer) == []
    assert consumer.seeks == []
