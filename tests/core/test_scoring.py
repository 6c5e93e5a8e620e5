"""Scoring decisions against gold: one majority vote, MajorityVote's, with its one tie rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.aggregation import MajorityVote
from llmens_core.scoring import majority, score_decisions

LABELS = st.sampled_from(["red", "blue", "green", None])


def test_a_tie_goes_to_the_first_label_in_sorted_order_whatever_the_llms_are_called():
    assert majority({"a": "red", "b": "blue"}) == "blue"
    assert majority({"z": "red", "a": "blue"}) == "blue"
    assert majority({"a": "red", "b": "blue", "c": "red"}) == "red"
    assert majority({"a": None, "b": None}) is None


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["gpt", "claude", "gemini", "llama", "qwen"]), LABELS, min_size=1))
def test_scoring_majority_is_majority_vote_on_the_item(votes):
    pairs = [(w, lab) for w, lab in votes.items() if lab is not None]
    if not pairs:
        assert majority(votes) is None
        return
    mv = MajorityVote().fit(["i"] * len(pairs), [w for w, _ in pairs], [lab for _, lab in pairs])
    assert majority(votes) == mv.predict()[0]


def test_score_decisions_counts_majority_vote_with_its_tie_rule():
    decisions = [
        {"product_id": "p1", "version": 1, "attribute": "color", "value": "red", "votes": {"a": "red", "b": "blue"}},
        {"product_id": "p2", "version": 1, "attribute": "color", "value": "red",
         "votes": {"a": "red", "b": "red", "c": "blue"}},
    ]
    gold = {("p1", "color"): "red", ("p2", "color"): "red"}
    row = score_decisions(decisions, gold)["color"]
    assert row["n"] == 2 and row["ensemble"] == 1.0
    assert row["majority_vote"] == 0.5  # p1 ties red/blue: blue, the first in sorted order
