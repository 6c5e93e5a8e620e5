"""``OnlineDawidSkene.set_worker_priors``: a cold model starts from a reliability per worker (e.g. learnt on other
attributes), trusts the reliable worker before it has learnt anything, and its own data outweigh the prior."""

from __future__ import annotations

import numpy as np
import pytest

from llmens_core.aggregation import default_online

CLASSES = ["x", "y", "z"]


def test_a_prior_makes_a_cold_model_trust_the_reliable_worker():
    cold = default_online(CLASSES)
    votes = {"good": "x", "bad1": "y", "bad2": "y"}
    assert CLASSES[int(cold.posterior(votes).argmax())] == "y"  # majority vote
    m = default_online(CLASSES)
    stats = m.set_worker_priors({"good": (0.97, 40.0), "bad1": (0.4, 40.0), "bad2": (0.4, 10.0)})
    assert stats.n_items == 40.0 and m.n_items_ == 40.0
    assert np.allclose(stats.confusion.sum(axis=(1, 2)), [40.0, 40.0, 10.0])
    assert CLASSES[int(m.posterior(votes).argmax())] == "x"
    assert m.skills_[m.workers_.index("good")] > 0.9 > 0.5 > m.skills_[m.workers_.index("bad1")]


def test_the_data_outweigh_a_wrong_prior_and_a_learnt_model_refuses_one():
    rng = np.random.default_rng(0)
    m = default_online(CLASSES)
    m.set_worker_priors({"w1": (0.95, 20.0), "w2": (0.95, 20.0), "w3": (0.95, 20.0)})
    it, wk, lb = [], [], []
    for i, z in enumerate(rng.integers(3, size=400)):
        for w, acc in (("w1", 0.9), ("w2", 0.9), ("w3", 0.34)):
            it.append(i)
            wk.append(w)
            lb.append(CLASSES[z if rng.random() < acc else (z + 1 + rng.integers(2)) % 3])
    for s in range(0, 400, 50):
        m.partial_fit(it[3 * s:3 * (s + 50)], wk[3 * s:3 * (s + 50)], lb[3 * s:3 * (s + 50)], race=False)
    assert m.skills_[m.workers_.index("w3")] < 0.6
    with pytest.raises(ValueError, match="cold"):
        m.set_worker_priors({"w1": (0.9, 10.0)})
    with pytest.raises(ValueError):
        default_online(CLASSES).set_worker_priors({})
