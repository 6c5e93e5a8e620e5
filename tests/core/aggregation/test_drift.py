"""Drift and late LLMs in the online model (issue 7).

Bound: once ``t`` is large the step size per item is the floor ``eta_min``, so the statistics of an item seen
``n`` items ago carry weight ``(1 - eta_min)^n``. After an LLM's accuracy drops from ``p_old`` to ``p_new`` its
estimated accuracy is about ``(1 - eta_min)^n p_old + (1 - (1 - eta_min)^n) p_new``, which passes the midpoint
``(p_old + p_new) / 2`` after ``n_half = ln 2 / -ln(1 - eta_min)`` items (69 for eta_min = 0.01). The test
asserts the crossing within ``2 n_half`` items (slack for sampling noise and posterior uncertainty) and not
before ``n_half / 4`` (it is the floor, not luck, that sets the speed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmens_core.aggregation import default_online, youth

K = 4
CLASSES = [f"c{k}" for k in range(K)]


@pytest.fixture(autouse=True)
def old_from_the_start(monkeypatch):
    """These tests are about the step sizes of a model that has learnt thousands of items, not about its basin: a
    young model's races (16 of them, one each time its items grow by half, up to 4,096) cost 15 s here."""
    monkeypatch.setattr(youth, "YOUNG_ITEMS", 0)


def _votes(rng, z, acc):
    if rng.random() < acc:
        return z
    return int(rng.choice([k for k in range(K) if k != z]))


def _stream(model, rng, accs, n_items, start, batch=8):
    """Feed n_items items; yields (items fed so far, model) after every batch."""
    for s in range(0, n_items, batch):
        it, wk, lb = [], [], []
        for i in range(start + s, start + min(s + batch, n_items)):
            z = int(rng.integers(K))
            for w, a in accs.items():
                it.append(i)
                wk.append(w)
                lb.append(CLASSES[_votes(rng, z, a)])
        model.partial_fit(it, wk, lb)
        yield s + batch, model


def test_drifting_llm_loses_weight_within_bound_set_by_eta_min():
    eta_min = 0.01
    n_half = math.log(2) / -math.log1p(-eta_min)
    rng = np.random.default_rng(0)
    m = default_online(CLASSES, eta_min=eta_min)
    accs = {"a": 0.9, "b": 0.85, "c": 0.8, "d": 0.8, "e": 0.75}
    for _ in _stream(m, rng, accs, 3000, 0):
        pass
    ja = m.workers_.index("a")
    before = m.skills_[ja]
    assert before > 0.85
    p_old, p_new = 0.9, 0.3
    mid = (p_old + p_new) / 2
    crossed = None
    for n, model in _stream(m, rng, {**accs, "a": p_new}, 1000, 3000):
        if model.skills_[ja] < mid:
            crossed = n
            break
    assert crossed is not None
    assert n_half / 4 <= crossed <= 2 * n_half, (crossed, n_half)
    # and keeps sinking: it ends below every other LLM's weight
    for _ in _stream(m, rng, {**accs, "a": p_new}, int(3 * n_half), 4000):
        pass
    w = dict(zip(m.workers_, m.weights_, strict=True))
    assert w["a"] < min(v for k, v in w.items() if k != "a")


def test_llm_added_mid_stream_starts_from_prior_and_earns_weight():
    rng = np.random.default_rng(1)
    m = default_online(CLASSES, eta_min=0.01)
    accs = {"a": 0.8, "b": 0.75, "c": 0.7}
    for _ in _stream(m, rng, accs, 1500, 0):
        pass
    m.add_workers(["late"])
    j = m.workers_.index("late")
    # no counts of its own: the empirical-Bayes centre, the pooled accuracy of the others (0.7-0.8)
    assert not m.S[j].any()
    others = np.mean([m.skills_[k] for k in range(len(m.workers_)) if k != j])
    np.testing.assert_allclose(np.diag(m.confusion_[j]), others, atol=0.05)
    for _ in _stream(m, rng, {**accs, "late": 0.95}, 400, 1500):
        pass
    w = dict(zip(m.workers_, m.weights_, strict=True))
    assert m.skills_[m.workers_.index("late")] > 0.85
    assert w["late"] > max(v for k, v in w.items() if k != "late")
