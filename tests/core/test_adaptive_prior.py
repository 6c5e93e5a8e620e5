"""The prior shared across attributes: a member reliable on every attribute gets a strong prior, one whose accuracy
swings with the attribute a weak one, and a member seen on one attribute none."""

from __future__ import annotations

import numpy as np

from llmens_core.adaptive import shared_priors
from llmens_core.aggregation import default_online

CLASSES = ["x", "y", "z"]


def learnt(acc: dict[str, float], n: int, seed: int):
    rng = np.random.default_rng(seed)
    m = default_online(CLASSES)
    it, wk, lb = [], [], []
    for i, z in enumerate(rng.integers(3, size=n)):
        for w, a in acc.items():
            it.append(i)
            wk.append(w)
            lb.append(CLASSES[z if rng.random() < a else (z + 1 + rng.integers(2)) % 3])
    m.partial_fit(it, wk, lb, race=False)
    return m


def test_steady_members_get_strong_priors_swinging_ones_weak_ones():
    models = {"a1": learnt({"steady": 0.9, "swing": 0.95, "other": 0.9, "once": 0.9}, 200, 0),
              "a2": learnt({"steady": 0.9, "swing": 0.5, "other": 0.85}, 200, 1),
              "a3": learnt({"steady": 0.9, "swing": 0.95, "other": 0.9}, 200, 2),
              "small": learnt({"steady": 0.2, "swing": 0.2, "other": 0.2}, 10, 3)}
    p = shared_priors(models, exclude=["a3"])
    assert "once" not in p and "steady" in p  # one attribute only; "small" has too few items and a3 is excluded
    assert abs(p["steady"][0] - models["a1"].skills_[0]) < 0.1
    assert p["steady"][1] > 5 * p.get("swing", (0.0, 0.0))[1]
    assert p["steady"][1] <= 200
    assert shared_priors({"a1": models["a1"]}) == {}
