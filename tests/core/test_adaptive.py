"""AdaptivePolicy: staging by price, deterministic exploration, confidence stopping rule, hot reconfiguration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.adaptive import AdaptivePolicy, expected_gain, informativeness
from llmens_core.aggregation import CANDIDATE_NAMES, default_online
from llmens_core.llm.config import EndpointConfig
from tests.core.adaptive_reference import RefPolicy, ref_expected_gain, ref_informativeness


@pytest.fixture(autouse=True, scope="module")
def one_split():
    """These tests check the policy's maths on whatever model training gives; averaging the race over several
    splits (:data:`~llmens_core.aggregation.auto.MAX_REPEATS`) only multiplied the cost of training their hundreds
    of small models (the two hypothesis tests: 59 -> 293 s)."""
    from llmens_core.aggregation import auto

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto, "MAX_REPEATS", 1)
        yield


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
    """Cold model (the weak prior: accuracy 2 / (K + 1), uniform class prior): two agreeing votes give
    r^2 / (r^2 + K - 1) with r = p (K - 1) / (1 - p) = 2 for every K: 0.8 for K = 2, 0.5 for K = 5 (keep
    asking both)."""
    p = AdaptivePolicy(EPS, exploration_share=0.0)
    two, five = default_online(["x", "y"]), default_online([f"c{k}" for k in range(5)])
    v2 = {"a": {"tiny": "x", "small": "x"}}
    v5 = {"b": {"tiny": "c1", "small": "c1"}}
    post = p.posteriors({"a": two, "b": five}, {**v2, **v5})
    assert post["a"].max() == pytest.approx(0.8, abs=1e-9)
    assert post["b"].max() == pytest.approx(0.5, abs=1e-9)
    assert not p.should_stop(post)
    assert not p.should_stop({"b": post["b"]})
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


# ---------------------------------------------------------------------- learned order and expected-gain stop rule


def trained(classes, accuracies, n=400, seed=0, families=True, race=True):
    """An online model that has seen ``n`` items labelled by workers of the given accuracies (uniform errors).
    With ``families``, "g|b" repeats "g|a"'s answer 80% of the time (two runs of one base model, declared as
    one family: the model finds them dependent from the votes and pools them). ``race=False``: plain online EM
    steps, no race on the first batch (for properties that hold of any model)."""
    rng = np.random.default_rng(seed)
    hint = {"g|a": "g", "g|b": "g"} if families else None
    # told its runs are correlated: a race of the dependent candidates (the criterion still fits the strength)
    m = default_online(list(classes), families=hint,
                       **({"candidates": [c for c in CANDIDATE_NAMES if c.endswith("+dependence")]} if families else {}))
    K = len(classes)
    z = rng.integers(K, size=n)
    it, wk, lb = [], [], []
    for i, zi in enumerate(z):
        said = {}
        for w, acc in accuracies.items():
            k = zi if rng.random() < acc else (zi + 1 + rng.integers(K - 1)) % K
            if families and w == "g|b" and "g|a" in said and rng.random() < 0.8:
                k = said["g|a"]
            said[w] = k
            it.append(i)
            wk.append(w)
            lb.append(classes[k])
    per = len(accuracies) * 100  # mini-batches of 100 items, as the stream sends them
    for s in range(0, len(it), per):
        m.partial_fit(it[s:s + per], wk[s:s + per], lb[s:s + per], race=race)
    return m


def flips(model, votes, remaining):
    """Brute force: does some combination of answers of ``remaining`` change the model's decision?"""
    d = int(np.argmax(model.posterior(votes)))
    for combo in itertools.product(model.classes_, repeat=len(remaining)):
        post = model.posterior({**votes, **dict(zip(remaining, combo, strict=True))})
        if int(np.argmax(post)) != d and post.max() - post[d] > 1e-9:
            return True
    return False


@settings(max_examples=60, deadline=None)
@given(K=st.integers(2, 3), acc=st.lists(st.floats(0.35, 0.97), min_size=4, max_size=4),
       n_asked=st.integers(1, 3), answers=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       seed=st.integers(0, 10_000), family=st.booleans())
def test_gain_rule_never_settles_while_an_unasked_llm_could_flip_the_decision(K, acc, n_asked, answers, seed,
                                                                             family):
    names = ["g|a", "g|b", "h", "i"] if family else ["a", "b", "h", "i"]
    classes = [f"c{k}" for k in range(K)]
    model = trained(classes, dict(zip(names, acc, strict=True)), n=60, seed=seed, race=False)  # any model will do
    votes = {n: classes[answers[j] % K] for j, n in enumerate(names[:n_asked])}
    remaining = names[n_asked:]
    eps = [ep(n, 0.01 * (j + 1)) for j, n in enumerate(names)]
    policy = AdaptivePolicy(eps, max_gain=0.0, exploration_share=0.0)
    gain = policy.gain(model, votes)
    assert gain == pytest.approx(expected_gain(model, votes, remaining))
    assert gain >= 0.0
    if flips(model, votes, remaining):
        assert gain > 0.0 and policy.unsettled({"x": model}, {"x": votes}) == ["x"]
    if not policy.unsettled({"x": model}, {"x": votes}):
        assert not flips(model, votes, remaining)
    # nothing left to ask: nothing to gain
    assert policy.gain(model, votes, asked=names) == 0.0


def test_gain_exact_and_sampled_agree_and_are_reproducible():
    classes = [f"c{k}" for k in range(4)]
    model = trained(classes, {"a": 0.9, "b": 0.6, "c": 0.7, "d": 0.55}, seed=3)
    votes = {"a": "c0", "b": "c1"}
    exact = expected_gain(model, votes, ["c", "d"])
    mc = expected_gain(model, votes, ["c", "d"], exact_outcomes=0, samples=4000)
    assert exact > 0.0 and mc == pytest.approx(exact, abs=0.01)
    assert mc == expected_gain(model, votes, ["c", "d"], exact_outcomes=0, samples=4000)
    assert expected_gain(model, votes, []) == 0.0


def test_cold_model_keeps_asking_a_learnt_one_stops_on_two_strong_agreeing_votes():
    """Cold (the weak prior, accuracy 2 / (K + 1) for all), 3 LLMs left: two agreeing votes leave a gain of
    0.0296 for K = 2, 0.021 for K = 3, 0.009 for K = 5 (all just settled at max_gain 0.03); two disagreeing
    votes 0.12 - 0.24 (keep asking)."""
    eps = [ep("strong1", 1.0), ep("strong2", 1.0), ep("weak1", 0.01), ep("weak2", 0.01), ep("weak3", 0.01)]
    classes = [f"c{k}" for k in range(3)]
    policy = AdaptivePolicy(eps, exploration_share=0.0)
    votes = {"x": {"strong1": "c0", "strong2": "c0"}}
    assert policy.gain(default_online(["c0", "c1"]), votes["x"]) == pytest.approx(0.8 / 27, abs=1e-12)
    assert policy.unsettled({"x": default_online(["c0", "c1"])}, votes) == []
    assert policy.gain(default_online(classes), votes["x"]) == pytest.approx(0.0208, abs=1e-3)
    assert policy.unsettled({"x": default_online(classes)}, {"x": {"strong1": "c0", "strong2": "c1"}}) == ["x"]
    warm = trained(classes, {"strong1": 0.95, "strong2": 0.95, "weak1": 0.6, "weak2": 0.6, "weak3": 0.6})
    assert policy.gain(warm, votes["x"]) < 1e-3 and policy.unsettled({"x": warm}, votes) == []
    # the weak ones agreeing against each other leave the strong ones something to settle
    assert policy.unsettled({"x": warm}, {"x": {"weak1": "c0", "weak2": "c1"}}) == ["x"]


def test_plan_with_models_ranks_by_learned_value_per_cost():
    eps = [ep("strong", 1.0), ep("weak", 0.001), ep("meh", 0.02)]
    classes = [f"c{k}" for k in range(4)]
    warm = trained(classes, {"strong": 0.95, "weak": 0.5, "meh": 0.7})
    assert informativeness(warm, "strong") > informativeness(warm, "meh") > informativeness(warm, "weak")
    p = AdaptivePolicy(eps, exploration_share=0.0)
    assert p.plan("x") == [["weak", "meh"], ["strong"]]  # without models: cheapest first, as before
    assert p.plan("x", {"a": warm}, ["a"]) == [["strong", "meh"], ["weak"]]
    # a cold model knows nothing: price order
    assert p.plan("x", {"a": default_online(classes)}, ["a"]) == p.plan("x")
    assert p.plan("x", {}, ["a"]) == p.plan("x")
    # by price the cheap ones stay first; explicit stages win; exploring asks everyone at once
    assert AdaptivePolicy(eps, exploration_share=0.0, cost="price").plan("x", {"a": warm}, ["a"])[0] == ["weak", "meh"]
    assert AdaptivePolicy(eps, exploration_share=0.0, stages=[["meh"]]).plan("x", {"a": warm}, ["a"]) == [
        ["meh"], ["weak", "strong"]]
    assert AdaptivePolicy(eps, exploration_share=1.0).plan("x", {"a": warm}, ["a"]) == [p.order]
    with pytest.raises(ValueError):
        AdaptivePolicy(eps, cost="tokens")


def test_abstentions_and_reason_with_unsettled():
    eps = [ep("a", 0.01), ep("b", 0.02), ep("c", 0.03)]
    m = default_online(["x", "y"])
    p = AdaptivePolicy(eps, exploration_share=0.0)
    assert p.unsettled({"q": m}, {"q": {"a": None}}) == ["q"]
    assert p.unsettled({"q": m}, {"q": {"a": None, "b": None}}) == []  # abstain_limit=2: give up
    assert AdaptivePolicy(eps, abstain_limit=None).unsettled({"q": m}, {"q": {"a": None, "b": None}}) == ["q"]
    assert p.unsettled({}, {"q": {"a": "x"}}) == ["q"]  # no model: keep asking
    assert p.reason("pid", unsettled=[]) == "confident"
    assert p.reason("pid", unsettled=["q"]) == "exhausted"
    assert AdaptivePolicy(eps, exploration_share=1.0).reason("pid", unsettled=["q"]) == "explore"


# ---------------------------------------------------------------------- optimised = reference (caches, vectorised gain)


def ref_ranked(policy, models, attributes):
    ref = RefPolicy.__new__(RefPolicy)
    ref.__dict__.update(policy.__dict__)
    return ref.value(models, attributes), ref.ranked(models, attributes)


POOL = ["g|a", "g|b", "h", "i", "j", "k"]  # g|a and g|b: correlated runs of one family (see trained)


@settings(max_examples=50, deadline=None)  # a race per trained example on even seeds (150 races took 75 s)
@given(K=st.integers(2, 5), acc=st.lists(st.floats(0.2, 0.99), min_size=5, max_size=5),
       n=st.integers(0, 80), seed=st.integers(0, 10_000), family=st.booleans(),
       votes=st.lists(st.one_of(st.none(), st.integers(0, 5)), min_size=6, max_size=6),
       n_asked=st.integers(0, 5), drop=st.integers(0, 3), exact=st.sampled_from([4096, 4096, 0, 10]),
       samples=st.integers(1, 40))
def test_optimised_gain_and_value_equal_the_reference(K, acc, n, seed, family, votes, n_asked, drop, exact,
                                                      samples):
    """Random small models (trained through the first batch's race or by plain steps, or cold, with or without a
    shared family, an LLM the model never saw) and
    votes (abstentions, a label outside the classes): the cached / vectorised functions give the reference's
    numbers (to 1e-12; the information, the ranking and both sampled and family-pooled gains bit for bit)."""
    classes = [f"c{k}" for k in range(K)]
    known = POOL[:5]  # "k" stays unknown to the model
    model = (trained(classes, dict(zip(known, acc, strict=True)), n=n, seed=seed, families=family, race=seed % 2 == 0)
             if n else default_online(classes, families={"g|a": "g", "g|b": "g"} if family else None))
    label = {None: None, 5: "not-a-class"}
    v = {w: label.get(x, classes[x % K] if x is not None else None) for w, x in zip(POOL[:n_asked], votes,
                                                                                   strict=False)}
    remaining = POOL[n_asked:len(POOL) - drop]
    for _ in range(2):  # second round: from the caches
        got = expected_gain(model, v, remaining, exact_outcomes=exact, samples=samples, seed=seed)
        want = ref_expected_gain(model, v, remaining, exact_outcomes=exact, samples=samples, seed=seed)
        assert got == pytest.approx(want, abs=1e-12, rel=0)
        assert got >= 0.0
        if K ** len([w for w in remaining if w not in v or v[w] is None]) > exact:
            assert got == want  # Monte Carlo: same draws, same arithmetic
        for w in POOL:
            assert informativeness(model, w) == ref_informativeness(model, w)
        p = AdaptivePolicy([ep(w, 0.01 * (j + 1), "g" if w.startswith("g|") else None) for j, w in enumerate(POOL)],
                           exploration_share=0.0)
        models = {"x": model, "y": default_online(classes)}
        vals, order = ref_ranked(p, models, ["x", "y"])
        assert p.value(models, ["x", "y"]) == vals and p.ranked(models, ["x", "y"]) == order


def test_family_pooled_exact_gain_is_the_reference_bit_for_bit():
    classes = [f"c{k}" for k in range(3)]
    model = trained(classes, {"g|a": 0.9, "g|b": 0.8, "h": 0.7, "i": 0.6}, n=600)
    assert model.params().vote_weights(["g|a", "g|b"]).max() < 1.0  # the pooled path is the one tested
    for votes, rem in (({"g|a": "c0"}, ["g|b", "h", "i"]), ({"h": "c1", "g|b": "c2"}, ["g|a", "i"])):
        assert expected_gain(model, votes, rem) == ref_expected_gain(model, votes, rem)


def test_caches_follow_new_versions_new_llms_and_are_bounded():
    from llmens_core.adaptive import value

    classes = [f"c{k}" for k in range(4)]
    model = trained(classes, {"a": 0.9, "b": 0.6, "c": 0.7}, n=100, seed=1)
    votes, rem = {"a": "c0", "b": "c1"}, ["c", "new"]

    def check():
        assert expected_gain(model, votes, rem) == pytest.approx(ref_expected_gain(model, votes, rem), abs=1e-12)
        for w in ("a", "b", "c", "new"):
            assert informativeness(model, w) == ref_informativeness(model, w)

    check()
    before = informativeness(model, "new")  # unknown: the prior confusion
    # a new version (more items, where "new" is an accurate LLM the model now knows)
    rng = np.random.default_rng(5)
    z = rng.integers(4, size=300)
    model.partial_fit(np.repeat(np.arange(300), 2), ["a", "new"] * 300,
                      [classes[k] for zi in z for k in (zi, zi)])
    check()
    assert informativeness(model, "new") > before
    # parameters that change without a new version (a new LLM, new families) are seen too
    v = model.version
    model.add_workers(["late"])
    model.set_families({"a": "fam", "b": "fam"})
    assert model.version == v
    check()
    assert informativeness(model, "late") == ref_informativeness(model, "late")
    # a new model object with the same version (e.g. restored) is not mistaken for the old one
    other = type(model).from_bytes(model.to_bytes())
    other.apply(trained(classes, {"a": 0.3, "b": 0.3}, n=50, seed=2).stats())
    other.version = model.version
    assert informativeness(other, "a") == ref_informativeness(other, "a") != informativeness(model, "a")
    # bounded: derived values live as long as the snapshot they were derived from
    import gc

    for _ in range(300):
        informativeness(default_online(classes), "a")
    gc.collect()
    assert len(value._DERIVED) <= 10


def test_policy_follows_new_llms_of_the_configuration():
    classes = [f"c{k}" for k in range(4)]
    warm = trained(classes, {"strong": 0.95, "weak": 0.5, "meh": 0.7})
    eps = [ep("strong", 1.0), ep("weak", 0.001), ep("meh", 0.02)]
    p = AdaptivePolicy(eps, exploration_share=0.0)
    assert p.plan("x", {"a": warm}, ["a"]) == [["strong", "meh"], ["weak"]]
    p.set_endpoints([*eps, ep("fresh", 0.0001)])
    assert p.ranked({"a": warm}, ["a"]) == ref_ranked(p, {"a": warm}, ["a"])[1]
    votes = {"strong": "c0", "meh": "c1"}
    assert p.gain(warm, votes) == pytest.approx(ref_expected_gain(warm, votes, ["weak", "fresh"]), abs=1e-12)
