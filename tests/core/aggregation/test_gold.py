"""Gold feedback: statistics with the posterior clamped to a known class (``clamped_stats``/``gold_stats``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.aggregation import OnlineDawidSkene, SufficientStats, clamped_stats

CLASSES = ["a", "b", "c", "none"]
WORKERS = ["w0", "w1", "w2"]

votes_st = st.dictionaries(st.sampled_from(WORKERS), st.one_of(st.none(), st.sampled_from(CLASSES)), min_size=1)
items_st = st.lists(st.tuples(votes_st, st.sampled_from(CLASSES)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(items=items_st)
def test_clamped_stats_equal_item_stats_with_a_one_hot_posterior(items):
    m = OnlineDawidSkene(CLASSES)
    got = m.gold_stats(items)
    want = SufficientStats([], CLASSES)
    for votes, gold in items:
        onehot = np.eye(len(CLASSES))[CLASSES.index(gold)]
        want = want.merge(m.item_stats(votes, posterior=onehot))
    want = want.aligned(got.workers, got.classes)
    np.testing.assert_allclose(got.confusion, want.confusion)
    np.testing.assert_allclose(got.class_counts, want.class_counts)
    usable = [(v, g) for v, g in items if any(lab is not None for lab in v.values())]
    assert got.n_items == want.n_items == len(usable)
    # every usable item is one whole count on its gold class; every non-abstaining vote one whole count
    assert got.class_counts.sum() == len(usable)
    assert got.confusion.sum() == sum(lab is not None for v, _ in usable for lab in v.values())
    for votes, gold in usable:
        k = got.classes.index(gold)
        for w, lab in votes.items():
            if lab is not None:
                assert got.confusion[got.workers.index(w), k, got.classes.index(lab)] >= 1.0


def test_clamped_stats_ignores_the_model_posterior():
    """The same votes with a different gold class give different statistics, whatever the model believes."""
    votes = {"w0": "a", "w1": "a", "w2": "a"}
    m = OnlineDawidSkene(CLASSES)
    for_a, for_b = m.gold_stats([(votes, "a")]), m.gold_stats([(votes, "b")])
    ka, kb = CLASSES.index("a"), CLASSES.index("b")
    assert for_a.confusion[:, ka, ka].tolist() == [1.0, 1.0, 1.0]
    assert for_b.confusion[:, kb, ka].tolist() == [1.0, 1.0, 1.0] and for_b.confusion[:, ka].sum() == 0
    assert for_b.class_counts.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_new_labels_and_workers_are_appended_and_none_gold_is_refused():
    s = clamped_stats([({"x": "z"}, "y")], ["a"])
    assert s.classes == ["a", "y", "z"] and s.workers == ["x"]
    assert s.confusion[0, 1, 2] == 1.0
    assert clamped_stats([({"x": None}, "a")]).n_items == 0
    with pytest.raises(ValueError, match="gold"):
        clamped_stats([({"x": "a"}, None)])


def test_gold_that_contradicts_a_worker_lowers_its_accuracy_and_weight(rng):
    """A worker the soft posterior trusts (it agrees with the majority) loses accuracy when gold says it is wrong."""
    m = OnlineDawidSkene(CLASSES)
    items, workers, labels = [], [], []
    for i in range(300):
        truth = CLASSES[rng.integers(3)]
        for w in WORKERS:
            items.append(i)
            workers.append(w)
            labels.append(truth)
    m.partial_fit(items, workers, labels)
    before = m.summary()
    gold = []
    for i in range(100):
        said = CLASSES[i % 3]
        # w0 and w1 say what gold says; w2 always says something else
        gold.append(({"w0": said, "w1": said, "w2": CLASSES[(i + 1) % 3]}, said))
    stats = m.gold_stats(gold)
    m.apply(stats)
    after = m.summary()
    assert after["accuracy"]["w2"] < before["accuracy"]["w2"] - 0.1
    assert after["weight"]["w2"] < before["weight"]["w2"]
    assert after["accuracy"]["w0"] > after["accuracy"]["w2"] + 0.1
    assert after["n_items"] == before["n_items"] + 100
    # serialisable like any delta (the learner may forward it)
    again = SufficientStats.from_bytes(stats.to_bytes())
    np.testing.assert_array_equal(again.confusion, stats.confusion)
