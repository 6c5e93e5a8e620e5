"""AdaptivePolicy: staging by price, deterministic exploration, confidence stopping rule, hot reconfiguration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.adaptive import AdaptivePolicy
from llmens_core.aggregation import default_online
from llmens_core.llm.config import EndpointConfig


def ep(name, price, family=None, enabled=True):
    return EndpointConfig(name=name, base_url="http://127.0.0.1:1/v1", model=name, family=family,
                          price_in_per_1k=price, price_out_per_1k=price, enabled=enabled)


EPS = [ep("big", 1.0), ep("tiny", 0.01), ep("mid", 0.1), ep("small", 0.05), ep("b-tie", 0.1)]


def test_cheapest_first_stages_and_ties_by_name():
    p = AdaptivePolicy(EPS, exploration_share=0.0)
    assert p.order == ["tiny", "small", "b-tie", "mid", "big"]
    assert p.plan("x") == [["tiny", "small"], ["b-tie"], ["mid"], ["big"]]
    p2 = AdaptivePolicy(EPS, exploration_share=0.0, stage_size=2)
    assert p2.plan("x") == [["tiny", "small"], ["b-tie", "mid"], ["big"]]


def test_explicit_stages_and_disabled_llms():
    p = AdaptivePolicy([*EPS, ep("off", 0.0, enabled=False)], exploration_share=0.0,
                       stages=[["big", "off"], ["tiny"]])
    assert p.plan("x") == [["big"], ["tiny"], ["small", "b-tie", "mid"]]


def test_families_diversified():
    eps = [ep("g4|a", 0.01, "g4"), ep("g4|b", 0.01, "g4"), ep("g35|a", 0.02, "g35"), ep("ft", 0.5)]
    assert AdaptivePolicy(eps).order == ["g4|a", "g35|a", "ft", "g4|b"]
    assert AdaptivePolicy(eps, diversify_families=False).order == ["g4|a", "g4|b", "g35|a", "ft"]


def test_explore_asks_everyone_in_one_stage_and_is_deterministic():
    p = AdaptivePolicy(EPS, exploration_share=0.5)
    ids = [f"p{i}" for i in range(200)]
    flags = [p.explore(i) for i in ids]
    assert flags == [AdaptivePolicy(EPS, exploration_share=0.5).explore(i) for i in ids]
    pid = ids[flags.index(True)]
    assert p.plan(pid) == [p.order]
    assert AdaptivePolicy(EPS, exploration_share=1.0).explore("a")
    assert not AdaptivePolicy(EPS, exploration_share=0.0).explore("a")


def test_should_stop_and_reason():
    p = AdaptivePolicy(EPS, exploration_share=0.0, confidence_target=0.9)
    assert p.should_stop({"a": np.array([0.95, 0.05]), "b": np.array([0.1, 0.9])})
    assert not p.should_stop({"a": np.array([0.95, 0.05]), "b": np.array([0.2, 0.8])})
    assert not p.should_stop({})
    assert not p.should_stop({"a": np.zeros(0)})
    assert p.pending({"a": np.array([0.95, 0.05]), "b": np.array([0.2, 0.8])}) == ["b"]
    assert p.reason("x", {"a": np.array([0.95, 0.05])}) == "confident"
    assert p.reason("x", {"a": np.array([0.5, 0.5])}) == "exhausted"
    assert AdaptivePolicy(EPS, exploration_share=1.0).reason("x", {"a": np.array([0.5, 0.5])}) == "explore"


def test_posteriors_come_from_the_live_model_cold_and_learnt():
    """Cold model (prior accuracy 0.7, uniform class prior): two agreeing votes give r^2/(r^2+K-1) with
    r = 0.7 (K-1)/0.3: 0.845 for K = 2 (keep asking), 0.956 for K = 5 (stop at 0.95)."""
    p = AdaptivePolicy(EPS, exploration_share=0.0)
    two, five = default_online(["x", "y"]), default_online([f"c{k}" for k in range(5)])
    v2 = {"a": {"tiny": "x", "small": "x"}}
    v5 = {"b": {"tiny": "c1", "small": "c1"}}
    post = p.posteriors({"a": two, "b": five}, {**v2, **v5})
    assert post["a"].max() == pytest.approx(0.845, abs=1e-3)
    assert post["b"].max() == pytest.approx(0.956, abs=1e-3)
    assert not p.should_stop(post)
    assert p.should_stop({"b": post["b"]})
    # once the model has learnt that both are accurate, two agreeing votes are enough on K = 2 as well
    rng = np.random.default_rng(0)
    z = rng.integers(2, size=2000)
    it, wk, lb = [], [], []
    for i, zi in enumerate(z):
        for w in ("tiny", "small", "mid"):
            it.append(i)
            wk.append(w)
            lb.append(["x", "y"][zi if rng.random() < 0.95 else 1 - zi])
    two.partial_fit(it, wk, lb)
    assert p.should_stop(p.posteriors({"a": two}, v2))
    # no usable vote -> not confident
    assert p.posteriors({"a": two}, {"a": {"tiny": None}})["a"].size == 0


def test_set_endpoints_adds_and_removes():
    p = AdaptivePolicy(EPS, exploration_share=0.0)
    p.set_endpoints([e for e in EPS if e.name != "small"] + [ep("new", 0.001)])
    assert p.order[0] == "new" and "small" not in p.llms
    assert sorted(n for s in p.plan("x") for n in s) == sorted(p.llms)
    with pytest.raises(ValueError):
        AdaptivePolicy(EPS, confidence_target=0.0)


names = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=8, unique=True)


@settings(max_examples=60, deadline=None)
@given(names=names, prices=st.lists(st.floats(0, 10), min_size=8, max_size=8),
       enabled=st.lists(st.booleans(), min_size=8, max_size=8), share=st.floats(0, 1),
       first=st.integers(1, 4), size=st.integers(1, 3), pid=st.text(max_size=10))
def test_plan_is_a_partition_of_the_enabled_llms(names, prices, enabled, share, first, size, pid):
    eps = [ep(n, prices[i], enabled=enabled[i]) for i, n in enumerate(names)]
    p = AdaptivePolicy(eps, exploration_share=share, first_stage=first, stage_size=size)
    plan = p.plan(pid)
    flat = [n for s in plan for n in s]
    assert sorted(flat) == sorted(e.name for e in eps if e.enabled)
    assert len(flat) == len(set(flat)) and all(plan)


@settings(max_examples=20, deadline=None)
@given(share=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_exploration_share_within_tolerance(share, seed):
    p = AdaptivePolicy(EPS, exploration_share=share, seed=seed)
    n = 20_000
    got = sum(p.explore(f"product-{i}") for i in range(n)) / n
    assert abs(got - share) <= 4 * np.sqrt(share * (1 - share) / n) + 1e-9


@settings(max_examples=100, deadline=None)
@given(post=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5), bump=st.floats(0.0, 1.0),
       target=st.floats(0.01, 1.0))
def test_stopping_rule_is_monotone_in_confidence(post, bump, target):
    p = AdaptivePolicy(EPS, confidence_target=target)
    lo = {f"a{i}": np.array([x, 1 - x]) for i, x in enumerate(post)}
    hi = {f"a{i}": np.array([min(1.0, max(x, 1 - x) + bump), 0.0]) for i, x in enumerate(post)}
    if p.should_stop(lo):
        assert p.should_stop(hi)
    # a lower target never stops later
    if p.should_stop(lo):
        assert AdaptivePolicy(EPS, confidence_target=target / 2).should_stop(lo)
