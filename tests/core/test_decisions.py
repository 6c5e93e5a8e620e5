"""The stream's learning helpers without Kafka: the delta a worker sends, and the learner's cold start."""

from __future__ import annotations

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene, SufficientStats
from llmens_core.decisions import ColdStart, StatsAccumulator


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _panel(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, n)
    votes = {f"llm{j}": np.where(rng.random(n) < 0.8, z, rng.integers(0, 3, n)) for j in range(3)}
    return [{w: str(v[i]) for w, v in votes.items()} for i in range(n)]


def test_a_cold_model_s_delta_carries_its_votes_and_a_warm_one_s_does_not():
    acc = StatsAccumulator(flush_items=10)
    model = OnlineDawidSkene(["0", "1", "2"])
    for i, votes in enumerate(_panel(10)):
        acc.add("a", f"p{i}", {**votes, "llm-down": None})
    delta = acc.take("a", model)
    assert delta.votes is not None and len(delta.votes[0]) == 30  # the abstention is not a vote
    record = delta.to_record()
    assert SufficientStats.from_dict(record["stats"]).n_items == 10
    assert [list(x) for x in delta.votes] == record["votes"]
    model.apply(delta.stats)
    for i, votes in enumerate(_panel(10, seed=1)):
        acc.add("a", f"q{i}", votes)
    warm = acc.take("a", model)
    assert warm.votes is None and "votes" not in warm.to_record()


def test_cold_start_holds_votes_until_enough_items_or_time():
    clock = Clock()
    cold = ColdStart(min_items=5, max_seconds=10.0, clock=clock)
    cold.add("gender", (["p1", "p2"], ["a", "a"], ["male", "female"]))
    cold.add("gender", (["p3", "p4"], ["b", "b"], ["male", "male"]))
    assert "gender" in cold and cold.due() == []
    cold.add("gender", (["p5"], ["a"], ["female"]))
    assert cold.due() == ["gender"]
    (items, workers, labels), n_records = cold.take("gender")
    assert sorted(items) == ["p1", "p2", "p3", "p4", "p5"] and n_records == 3 and "gender" not in cold
    cold.add("age", (["p1"], ["a"], ["adult"]))
    clock.now = 9.9
    assert cold.due() == []
    clock.now = 10.0
    assert cold.due() == ["age"]


def test_a_redelivered_product_s_votes_are_held_once():
    cold = ColdStart(min_items=2)
    cold.add("gender", (["p1", "p1"], ["a", "b"], ["male", "male"]))
    cold.add("gender", (["p1"], ["a"], ["female"]))  # the same product decided again
    assert cold.due() == []
    (items, workers, labels), _ = cold.take("gender")
    assert sorted(zip(items, workers, labels)) == [("p1", "a", "female"), ("p1", "b", "male")]
