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
    models = {"a1": learnt({"steady": 0.9, "swing": 0.95, "o1": 0.85, "o2": 0.8, "once": 0.9}, 200, 0),
              "a2": learnt({"steady": 0.9, "swing": 0.6, "o1": 0.85, "o2": 0.8}, 200, 1),
              "a3": learnt({"steady": 0.9, "swing": 0.95, "o1": 0.85, "o2": 0.8}, 200, 2),
              "small": learnt({"steady": 0.2, "swing": 0.2, "o1": 0.2}, 10, 3)}
    p = shared_priors(models, exclude=["small"])
    assert "once" not in p and {"steady", "swing"} <= set(p)  # "once" was measured on one attribute only
    assert p["steady"][1] > 3 * p["swing"][1] and p["steady"][1] <= 200  # capped at the median items
    assert p == shared_priors(models)  # "small" has fewer than MIN_ITEMS items: left out anyway
    two = {a: models[a] for a in ("a1", "a2")}
    steady = [dict(zip(m.workers_, m.skills_.tolist(), strict=True))["steady"] for m in two.values()]
    assert abs(shared_priors(two)["steady"][0] - float(np.mean(steady))) < 0.02  # 200 items each: the plain mean
    assert shared_priors({"a1": models["a1"]}) == {}
