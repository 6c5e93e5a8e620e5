"""``OnlineDawidSkene.set_worker_priors``: a cold model starts from a reliability per worker (e.g. learnt on other
attributes) and, given another model's candidate scores, trusts the reliable worker before it has learnt anything;
its own data outweigh the prior; a model that has learnt refuses one."""

from __future__ import annotations

import numpy as np
import pytest

from llmens_core.aggregation import default_online

CLASSES = ["x", "y", "z"]
SKILLS = {"good": 0.95, "fair": 0.7, "poor": 0.65}


def learnt(acc: dict[str, float], n: int, seed: int, model=None):
    rng = np.random.default_rng(seed)
    m = default_online(CLASSES) if model is None else model
    it, wk, lb = [], [], []
    for i, z in enumerate(rng.integers(3, size=n)):
        for w, a in acc.items():
            it.append(i)
            wk.append(w)
            lb.append(CLASSES[z if rng.random() < a else (z + 1 + rng.integers(2)) % 3])
    J = len(acc)
    for s in range(0, n, 40):
        m.partial_fit(it[J * s:J * (s + 40)], wk[J * s:J * (s + 40)], lb[J * s:J * (s + 40)], race=False)
    return m


def test_a_prior_with_scores_makes_a_cold_model_trust_the_reliable_worker():
    votes = {"good": "x", "fair": "y", "poor": "y"}
    assert CLASSES[int(default_online(CLASSES).posterior(votes).argmax())] == "y"  # cold: majority vote
    donor = learnt(SKILLS, 200, 0)
    assert donor.candidate_.structure != "pooled"
    m = default_online(CLASSES)
    stats = m.set_worker_priors({"good": (0.97, 40.0), "fair": (0.6, 40.0), "poor": (0.55, 10.0)},
                                (donor.score, donor.score_m2, donor.score_votes))
    assert stats.n_items == 40.0 and m.n_items_ == 40.0
    assert np.allclose(stats.confusion.sum(axis=(1, 2)), [40.0, 40.0, 10.0])
    assert m.candidate_.structure != "pooled"
    assert CLASSES[int(m.posterior(votes).argmax())] == "x"
    no_scores = default_online(CLASSES)
    no_scores.set_worker_priors({"good": (0.97, 40.0), "fair": (0.6, 40.0), "poor": (0.55, 10.0)})
    assert no_scores.candidate_.structure == "pooled"  # nothing scored: the simplest candidate


def test_the_data_outweigh_a_wrong_prior_and_a_learnt_model_refuses_one():
    m = default_online(CLASSES)
    m.set_worker_priors({w: (0.95, 20.0) for w in SKILLS})
    learnt(SKILLS, 400, 1, m)
    skill = dict(zip(m.workers_, m.skills_.tolist(), strict=True))
    assert skill["good"] > skill["poor"] + 0.1 and skill["poor"] < 0.85
    with pytest.raises(ValueError, match="cold"):
        m.set_worker_priors({"good": (0.9, 10.0)})
    with pytest.raises(ValueError):
        default_online(CLASSES).set_worker_priors({})
