"""The stall watchdog's rule: seek back only after ``checks`` looks in a row at a partition fetched past what
faust delivered, to the committed offset, or to the first record where nothing is committed yet."""

from __future__ import annotations

import asyncio

from faust.types import TP

from streams.settings import Settings
from streams.watchdog import StallWatchdog
from streams.worker import Worker


class _Consumer:
    """The four read-only views and the seek the watchdog uses, over fixed numbers."""

    def __init__(self, states: dict, delivered: dict, committed: dict) -> None:
        self.states, self.delivered, self.committed = states, delivered, committed
        self.rewound: list = []

    async def heal_held_heads(self):
        return []

    def fetch_states(self):
        return {tp: {"position": p} for tp, p in self.states.items()}

    def delivered_offset(self, tp):
        return self.delivered.get(tp)

    def committed_offset(self, tp):
        return self.committed.get(tp)

    async def rewind(self, tp, offset):
        self.rewound.append((tp, offset))
        return True


def _watchdog(tmp_path) -> StallWatchdog:
    return StallWatchdog(Worker(Settings(data_dir=tmp_path)), "updates", checks=3)


def test_a_partition_fetched_past_what_was_delivered_is_re_read_after_three_looks(tmp_path):
    dog = _watchdog(tmp_path)
    committed, never = TP("updates", 0), TP("updates", 1)
    c = _Consumer({committed: 98, never: 40, TP("changelog", 0): 9}, {committed: 60}, {committed: 50})
    assert [asyncio.run(dog.check(c)) for _ in range(2)] == [[], []]
    assert asyncio.run(dog.check(c)) == [(committed, 50), (never, 0)]  # no commit yet: from the first record
    assert dog.w.counters["stalled_redeliveries"] == 2


def test_a_partition_that_delivers_between_looks_is_not_stalled(tmp_path):
    dog = _watchdog(tmp_path)
    tp = TP("updates", 0)
    c = _Consumer({tp: 98}, {tp: 60}, {tp: 50})
    for delivered in (61, 62, 63, 64):
        c.delivered[tp] = delivered
        assert asyncio.run(dog.check(c)) == []
    c.delivered[tp] = 97  # caught up with the fetch position
    assert [asyncio.run(dog.check(c)) for _ in range(4)] == [[], [], [], []]


def test_nothing_is_re_read_while_products_are_in_flight(tmp_path):
    dog = _watchdog(tmp_path)
    tp = TP("updates", 0)
    c = _Consumer({tp: 98}, {}, {})
    dog.w.inflight["ask_llms"] = 1
    assert [asyncio.run(dog.check(c)) for _ in range(4)] == [[], [], [], []] and not c.rewound
