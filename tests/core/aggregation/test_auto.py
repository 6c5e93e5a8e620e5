"""Property tests of the default's model choice, its dependence handling and its online twin (issue 11)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from agg_synth import (
    graded_crowd_with_hard_items,
    imbalanced_crowd,
    make_confusions,
    sample_votes,
    simulated_panel_votes,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmens_core.aggregation import (
    AutoDawidSkene,
    DawidSkene,
    MajorityVote,
    OnlineDawidSkene,
    _bayes,
    default_aggregator,
    selection,
)
from llmens_core.aggregation._bayes import ALL_CANDIDATES, INDEPENDENT_CANDIDATES, m_step
from llmens_core.aggregation.auto import repeated_patterns
from llmens_core.aggregation.evaluate import run_online

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _symmetric_world(rng, J, K, acc, n):
    conf = np.full((J, K, K), (1 - acc) / (K - 1))
    conf[:, np.arange(K), np.arange(K)] = acc
    return sample_votes(rng, conf, n)


def _columns(z, K, rng, spec):
    """Votes from named columns: ``spec`` name -> accuracy, or name -> another name's column (a copy)."""
    cols: dict = {}
    for name, acc in spec.items():
        if isinstance(acc, str):
            cols[name] = cols[acc]
        else:
            cols[name] = np.where(rng.random(len(z)) < acc, z, (z + rng.integers(1, K, len(z))) % K)
    n = len(z)
    it = np.concatenate([np.arange(n)] * len(cols))
    wk = np.concatenate([[w] * n for w in cols])
    return it, wk, np.concatenate(list(cols.values()))


@SETTINGS
@given(seed=st.integers(0, 10_000), K=st.integers(2, 4))
def test_pooled_candidate_is_majority_vote(seed, K):
    """The simplest candidate (one shared accuracy, uniform class prior) decides as majority vote wherever
    the majority is strict."""
    rng = np.random.default_rng(seed)
    it, wk, lb, _ = _symmetric_world(rng, 5, K, 0.7, 200)
    pooled = AutoDawidSkene(candidates=("pooled",), dependence=False, difficulty=False).fit(it, wk, lb)
    mv = MajorityVote().fit(it, wk, lb)
    share = mv.predict_proba()
    strict = np.sort(share, axis=1)[:, -1] > np.sort(share, axis=1)[:, -2]
    np.testing.assert_array_equal(pooled.predict()[strict], mv.predict()[strict])


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_selection_keeps_majority_vote_when_workers_are_alike(seed):
    """Equally reliable, symmetric, independent workers: the chosen model decides as majority vote (the
    one-standard-error rule keeps majority vote's model, or a richer one that the evidence shrinks to it)."""
    rng = np.random.default_rng(seed)
    it, wk, lb, _ = _symmetric_world(rng, 5, 3, 0.75, 400)
    model = default_aggregator().fit(it, wk, lb)
    share = MajorityVote().fit(it, wk, lb).predict_proba()
    top2 = np.sort(share, axis=1)[:, -2:]
    strict = top2[:, 1] > top2[:, 0]
    agree = (model.predict()[strict] == model.classes_[share.argmax(1)][strict]).mean()
    assert agree >= 0.97, (agree, model.candidate_.name)
    assert not model.candidate_.dependent


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_selection_leaves_majority_vote_for_unequal_workers(seed):
    """One expert and four near-spammers: the held-out votes say so, and the default beats majority vote."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, 800)
    it, wk, lb = _columns(z, 3, rng, {"e": 0.95, "a": 0.45, "b": 0.45, "c": 0.45, "d": 0.45})
    model = default_aggregator().fit(it, wk, lb)
    assert model.candidate_.structure != "pooled"
    acc = (model.predict().astype(int) == z).mean()
    assert acc > (MajorityVote().fit_predict(it, wk, lb).astype(int) == z).mean() + 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_rare_positive_class_in_a_sparse_crowd_keeps_majority_vote_s_accuracy(seed):
    """A yes/no attribute with 12 % positives, three votes per item from a sparse crowd, workers who miss more
    positives than they invent. The learned class prior is what fits these votes, and choosing against it
    costs accuracy: a veto on held-out agreement beyond chance (measured at the decisions' shares, so it
    favours balanced decisions) once removed every learned prior here and fell 12 to 18 points below majority
    vote (76.7, 82.7, 81.3 against 94.9, 96.6, 97.0 on these seeds)."""
    it, wk, lb, z, log_joint = imbalanced_crowd(np.random.default_rng(seed))
    model = default_aggregator().fit(it, wk, lb)
    acc = (model.predict().astype(int) == z[model.items_.astype(int)]).mean()
    mv = (MajorityVote().fit_predict(it, wk, lb).astype(int) == z).mean()
    assert model.candidate_.class_prior == "learned", model.choice_
    assert acc >= mv - 0.01, (acc, mv, model.choice_)
    assert acc >= (log_joint.argmax(1) == z).mean() - 0.01  # the Bayes oracle, within a point


@pytest.mark.parametrize(("n_items", "seed"), [(600, 0), (600, 1), (2000, 0)])
def test_hard_items_of_a_graded_crowd_do_not_become_a_class_of_their_own(n_items, seed):
    """Five grades, 60 % of the items hard (their votes spread around the true grade). ``shared`` explained these
    votes best with one grade as a bin for the hard items of its neighbours (learned prior 0.49 for a grade of
    18 %), and decided 62.3, 64.5 and 62.2 % against majority vote's 68.7, 69.0 and 66.8 on these worlds; it is
    not raced on more than two labels now (``_bayes.candidates_for``)."""
    it, wk, lb, z = graded_crowd_with_hard_items(np.random.default_rng(seed), n_items=n_items,
                                                 n_workers=150 if n_items < 1000 else 300)
    model = default_aggregator().fit(it, wk, lb)
    acc = (model.predict().astype(int) == z[model.items_.astype(int)]).mean()
    mv = (MajorityVote().fit_predict(it, wk, lb).astype(int) == z).mean()
    assert acc >= mv - 0.005, (acc, mv, model.choice_)
    assert model.candidate_.structure != "shared", model.choice_


def test_shared_is_raced_on_binary_labels_only_and_difficulty_on_more():
    """The candidates of a race by number of labels; a race of ``shared`` (or of difficulty) alone keeps it
    (nothing else to race)."""
    assert _bayes.candidates_for(ALL_CANDIDATES, 2) == tuple(c for c in ALL_CANDIDATES if not c.difficulty)
    three = _bayes.candidates_for(ALL_CANDIDATES, 3)
    assert {c.structure for c in three} == {"pooled", "onecoin", "full"}
    assert three == tuple(c for c in ALL_CANDIDATES if c.structure != "shared")
    assert sum(c.difficulty for c in three) == 6
    only = (_bayes.Candidate("shared", "learned"),)
    assert _bayes.candidates_for(only, 5) == only
    hard = (_bayes.Candidate("full", "learned", difficulty=True),)
    assert _bayes.candidates_for(hard, 2) == hard
    online = OnlineDawidSkene(classes=["a", "b", "c"])
    online.partial_fit(["i1", "i1", "i2", "i2"], ["w1", "w2", "w1", "w2"], ["a", "a", "b", "c"])
    assert online.candidate_.structure != "shared"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repeated_patterns_are_copies_not_agreement(seed):
    """Independent items never share a pattern more often than the model explains (none flagged, frequent
    unanimous patterns included); with ten copies of every item, the improbably repeated patterns are, and all
    copies of one pattern form one group."""
    rng = np.random.default_rng(seed)
    conf = make_confusions(rng, 5, 3, 0.55, 0.9)
    it, wk, lb, _ = sample_votes(rng, conf, 400)
    assert (repeated_patterns(it, wk, lb, 400, 5, 3) < 0).all()
    copies = 10
    repeated = repeated_patterns(np.concatenate([it + c * 400 for c in range(copies)]), np.tile(wk, copies),
                                 np.tile(lb, copies), 400 * copies, 5, 3)
    assert (repeated >= 0).mean() > 0.05
    per_item = repeated.reshape(copies, 400)
    assert (per_item == per_item[0]).all()  # a copy is flagged exactly when its original is, in the same group


def test_repeating_every_item_does_not_change_the_decisions():
    """Maximum likelihood does not change when every item is repeated, and neither should the decisions. The
    stream meets repeats whenever a catalogue re-lists a product (same text, same answers). On the simulated
    panel's gender votes, 25 copies moved the default from 99.1 % to 87.7 % (majority vote 96.2 %) while
    cross-validation put copies on both sides of a fold; repeated patterns now share a fold."""
    it, wk, lb, gold = simulated_panel_votes("gender")
    once = default_aggregator().fit(it, wk, lb)
    decided = dict(zip(once.items_.tolist(), once.predict().tolist(), strict=True))
    copies = 25
    many = default_aggregator().fit(np.concatenate([it + f"~{c}" for c in range(copies)]), np.tile(wk, copies),
                                    np.tile(lb, copies))
    changed = sum(decided[i.split("~")[0]] != p for i, p in zip(many.items_.tolist(), many.predict().tolist(),
                                                                 strict=True))
    assert changed <= 0.01 * len(many.items_), (changed, once.choice_, many.choice_)


def test_one_se_rule_prefers_the_simpler_candidate_on_a_tie():
    C = len(ALL_CANDIDATES)
    rng = np.random.default_rng(0)
    per_unit = np.tile(rng.normal(-1.0, 0.1, (100, 1)), (1, C))  # every candidate scores the same
    total, m2 = selection.moments(per_unit)
    assert selection.choose(total, m2, 100, 300) == INDEPENDENT_CANDIDATES[0]
    per_unit[:, 4] += 0.5  # "full" clearly better on every unit
    total, m2 = selection.moments(per_unit)
    assert selection.choose(total, m2, 100, 300) == INDEPENDENT_CANDIDATES[4]


@SETTINGS
@given(seed=st.integers(0, 10_000), copies=st.integers(2, 10))
def test_copies_of_a_wrong_worker_do_not_outvote_independent_right_ones(seed, copies):
    """``copies`` exact copies of a poor worker next to two good independent ones: the copies count once, so
    the default does as well as with a single copy (and textbook DS, which counts every copy, does not)."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, 1000)
    spec = {"w": 0.5, "g1": 0.8, "g2": 0.8}
    it1, wk1, lb1 = _columns(z, 3, np.random.default_rng(seed + 1), spec)
    it, wk, lb = _columns(z, 3, np.random.default_rng(seed + 1), {**spec, **{f"w{r}": "w" for r in range(copies)}})
    one = (default_aggregator().fit_predict(it1, wk1, lb1).astype(int) == z).mean()
    model = default_aggregator().fit(it, wk, lb)
    many = (model.predict().astype(int) == z).mean()
    counted = (DawidSkene(prior_strength=0.0, class_prior_strength=0.0).fit_predict(it, wk, lb).astype(int) == z)
    # the copies may change the model chosen (one 0.843, many 0.831 at seed 9999, copies 2); counting every
    # copy, textbook DS falls to about chance there (0.50)
    assert many >= one - 0.02 and many > counted.mean() + 0.2
    assert [sorted(model.workers_[g].tolist()) for g in model.clusters_.groups()] == [
        sorted(["w"] + [f"w{r}" for r in range(copies)])]


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_a_duplicated_worker_adds_no_evidence(seed):
    """With the candidate fixed, a second copy of a worker leaves every posterior (almost) where it was."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, 600)
    spec = {"a": 0.7, "b": 0.75, "c": 0.8}
    make = lambda: AutoDawidSkene(candidates=("onecoin",), dependence=True)  # noqa: E731
    base = make().fit(*_columns(z, 3, np.random.default_rng(seed), spec))
    dup = make().fit(*_columns(z, 3, np.random.default_rng(seed), {**spec, "a2": "a"}))
    assert dup.candidate_.dependent
    # Not exactly: the copy is one more member of the population the empirical-Bayes prior is fitted to.
    # Hypothesis found posteriors 0.038 apart (seed 1666; the same 600 decisions); counted as an independent
    # worker, the copy moves them by up to 0.89 there.
    np.testing.assert_allclose(dup.predict_proba(), base.predict_proba(), atol=0.05)


def test_weak_prior_is_better_than_chance_and_symmetric():
    for K in (2, 3, 7):
        theta = m_step(np.zeros((1, K, K)), np.zeros(K), "pooled").theta[0]
        np.testing.assert_allclose(np.diag(theta), 2 / (K + 1))
        assert theta[0, 0] > 1 / K


@pytest.mark.parametrize("seed", [0, 1])
def test_one_online_pass_agrees_with_the_batch_default(seed):
    """Dense synthetic panel with unequal, asymmetric workers: one shuffled online pass decides as the batch
    model on at least 98% of the items and is as accurate within half a point."""
    rng = np.random.default_rng(seed)
    K, J = 3, 6
    conf = np.empty((J, K, K))
    for j in range(J):
        for k in range(K):
            acc = rng.uniform(0.5, 0.9)
            conf[j, k] = np.insert(rng.dirichlet(np.ones(K - 1)) * (1 - acc), k, acc)
    it, wk, lb, z = sample_votes(rng, conf, 3000)
    batch = default_aggregator().fit(it, wk.astype(str), lb.astype(str))
    model, items, proba = run_online(it, wk.astype(str), lb.astype(str))
    online = np.asarray(model.classes_)[proba.argmax(1)]
    assert (online == batch.predict()).mean() >= 0.98
    acc_b = (batch.predict().astype(int) == z).mean()
    acc_o = (online.astype(int) == z).mean()
    assert acc_o >= acc_b - 0.005
    assert acc_b > (DawidSkene(prior_strength=0).fit_predict(it, wk, lb).astype(int) == z).mean() - 0.005


def test_params_snapshot_is_read_only_and_follows_the_model(rng):
    m = OnlineDawidSkene(["a", "b"])
    m.partial_fit([0, 0, 1, 1], ["x", "y", "x", "y"], ["a", "a", "b", "a"])
    p = m.params()
    assert p.version == m.version and p.workers == ("x", "y") and p.classes == ("a", "b")
    assert p.log_theta.shape == (2, 2, 2) and p.log_pi.shape == (2,) and p.prior_log_theta.shape == (2, 2)
    with pytest.raises(ValueError):
        p.log_theta[0, 0, 0] = 0.0
    np.testing.assert_allclose(np.exp(p.log_rows("x")), m.confusion_[0])
    np.testing.assert_allclose(np.exp(p.log_rows("new")), np.exp(p.prior_log_theta))
    assert m.params() is p  # cached while the model does not change
    m.partial_fit([2, 2], ["x", "y"], ["b", "b"])
    assert m.params() is not p and m.params().version == m.version


# -- identifiability: a fit that turns a class into a copy of another is not admitted ---------------------


@SETTINGS
@given(seed=st.integers(0, 10_000), K=st.integers(2, 5), J=st.integers(1, 6))
def test_workers_better_than_any_other_answer_on_every_class_are_identifiable(seed, K, J):
    rng = np.random.default_rng(seed)
    theta = rng.dirichlet(np.ones(K), size=(J, K))
    theta[:, np.arange(K), np.arange(K)] += theta.max(axis=2) + 0.01  # the true class is each row's mode
    theta /= theta.sum(axis=2, keepdims=True)
    N = rng.uniform(0.0, 5.0, size=(J, K, K))
    assert _bayes.identifiable(theta, N) and not _bayes.phantom_classes(theta, N).any()


@SETTINGS
@given(seed=st.integers(0, 10_000), K=st.integers(2, 5), J=st.integers(1, 6))
def test_a_class_whose_items_are_called_another_class_is_a_phantom(seed, K, J):
    rng = np.random.default_rng(seed)
    theta = np.full((J, K, K), 0.1 / max(K - 1, 1))
    theta[:, np.arange(K), np.arange(K)] = 0.9
    k, other = rng.choice(K, size=2, replace=False)
    theta[:, k] = theta[:, other]  # class k's items get the answers of class `other`
    N = np.ones((J, K, K))
    assert _bayes.phantom_classes(theta, N).tolist() == [c == k for c in range(K)]
    N[:, k] = 0.0  # no vote attributed to class k: nothing to tell apart
    assert _bayes.identifiable(theta, N)


@SETTINGS
@given(seed=st.integers(0, 10_000), K=st.integers(3, 5), J=st.integers(2, 6))
def test_one_worker_who_names_a_class_is_enough(seed, K, J):
    """The other workers answer class k's items as another class (the average row peaks elsewhere), but one
    worker's counts on those items peak at k: the class keeps its name (a reliable minority may be right)."""
    rng = np.random.default_rng(seed)
    k, other = rng.choice(K, size=2, replace=False)
    theta = np.full((J, K, K), 0.1 / (K - 1))
    theta[:, np.arange(K), np.arange(K)] = 0.9
    theta[1:, k] = theta[1:, other]
    N = 10.0 * theta
    assert _bayes.phantom_classes(theta, N).tolist() == [False] * K
    theta[0, k] = theta[0, other]
    N = 10.0 * theta  # now no worker names k either
    assert _bayes.phantom_classes(theta, N).tolist() == [c == k for c in range(K)]


def test_em_starts_open_one_basin_per_dense_worker():
    from llmens_core.aggregation.auto import _units, em_starts

    n = 100
    it = np.concatenate([np.arange(n), np.arange(n), np.arange(10)])
    wk = np.concatenate([np.zeros(n, int), np.ones(n, int), np.full(10, 2)])
    lb = np.concatenate([np.zeros(n, int), np.ones(n, int), np.full(10, 2)])
    d, _ = _units(it, wk, lb, n, 3, 3, compress=False)
    starts = em_starts(d)
    assert len(starts) == 3  # majority vote, then workers 0 and 1 (worker 2 answered 10 of 100 items)
    assert np.allclose(starts[1][:, 0], 1.0) and np.allclose(starts[2][:, 1], 1.0)
    assert np.allclose(starts[0][10:], [0.5, 0.5, 0.0])


def test_a_reliable_minority_llm_is_found_in_its_own_basin():
    """The shipped real-LLM gender votes (issue 13): two small LLMs answer "unisex" on most items, one is right
    on 92.5% of them. From the majority-vote start EM stays where the majority is (0.40 for this model); the
    criterion takes the basin opened by that LLM's start, as it predicts held-out votes better."""
    from llmens_core.scoring import real_llm_votes

    (it, wk, lb), gold = real_llm_votes()["gender"]

    def accuracy(model):
        return np.mean([gold[i] == p for i, p in zip(model.items_, model.predict())])

    chosen = default_aggregator().fit(it, wk, lb)
    best_single = max(np.mean([gold[i] == lab for i, w, lab in zip(it, wk, lb) if w == llm]) for llm in set(wk))
    assert chosen.multistart_ and accuracy(chosen) >= best_single - 0.005
    assert accuracy(chosen) > accuracy(MajorityVote().fit(it, wk, lb)) + 0.2
    same_model = default_aggregator(candidates=(chosen.candidate_,), dependence=False, multistart=False)
    assert accuracy(same_model.fit(it, wk, lb)) < accuracy(chosen) - 0.2


@pytest.mark.parametrize("relabelling", [0, 1, 2])
def test_the_race_s_choice_does_not_hinge_on_one_random_split(relabelling):
    """The same gender votes with the items renamed: the folds are a random split of the items, and on 53 items one
    split decided the basin (the one right LLM's or the majority's) on three of six relabellings each. The race
    averages several splits on small data (:func:`~llmens_core.aggregation.auto.cv_repeats`), and every
    relabelling makes the choice of the original names. Fails with ``repeats=1`` on relabellings 0-2."""
    from llmens_core.scoring import real_llm_votes

    (it, wk, lb), _ = real_llm_votes()["gender"]
    it, wk, lb = (np.asarray(x, dtype=object) for x in (it, wk, lb))
    names = np.unique(it)
    rename = dict(zip(names, np.random.default_rng(relabelling).permutation(len(names)), strict=True))
    renamed = np.array([rename[i] for i in it])
    order = np.argsort(renamed, kind="stable")
    original = default_aggregator().fit(it, wk, lb)
    relabelled = default_aggregator().fit(renamed[order], wk[order], lb[order])
    assert relabelled.choice_ == original.choice_ == "full+class-prior+multistart"


def test_racing_the_starts_keeps_the_majority_start_pick_unless_another_basin_is_clearly_better():
    """The `llmens fit` panel (tests/streams/test_fit.py) on a closed label set with an unvoted class: a
    multistart fit scored a little better than the majority-start pick there, which once moved the choice to a
    basin where the 0.95 LLM looked 0.86 (decisions 0.973 -> 0.883). A second basin must beat the majority-start
    pick by more than one standard error; by less, the race leaves the choice as it is without the race. (Seed 1:
    seed 0's near-tie was with a ``shared`` fit, not raced on four labels since ``_bayes.candidates_for``.)"""
    rng = random.Random(1)
    skill, labels = {"good": 0.95, "ok": 0.75, "bad": 0.4}, ["male", "female", "unisex"]
    it, wk, lb, truth = [], [], [], {}
    for i in range(300):
        truth[i] = t = rng.choice(labels)
        for llm, p in skill.items():
            it.append(i), wk.append(llm)
            lb.append(t if rng.random() < p else rng.choice([x for x in labels if x != t]))
    classes = [*labels, "none"]
    raced = default_aggregator(classes=classes).fit(it, wk, lb)
    plain = default_aggregator(classes=classes, multistart=False).fit(it, wk, lb)
    assert any(ms for _c, ms in raced.options_)  # the race was run
    scores = raced.cv_scores_
    assert max(v for k, v in scores.items() if "multistart" in k) > scores[plain.choice_]  # and looked better
    assert raced.choice_ == plain.choice_ and not raced.multistart_
    assert np.array_equal(raced.predict(), plain.predict())
    assert dict(zip(raced.workers_, raced.skills_))["good"] > 0.9


def _sim_reusability():
    import csv
    from pathlib import Path

    from llmens_core.scoring import demo_gold

    rows = list(csv.DictReader((Path(__file__).parent / "data" / "sim_reusability_votes.csv").open()))
    gold = {pid: lab for (pid, a), lab in demo_gold().items() if a == "reusability"}
    return rows, gold


def test_the_stream_s_small_flushes_keep_every_class_itself():
    """Regression: in 16-item steps the criterion once chose a fit whose "none" class every LLM answered
    "reusable" (0.757 against majority vote's 0.932); that fit is no longer admitted."""
    rows, gold = _sim_reusability()
    items = list(dict.fromkeys(r["item"] for r in rows))
    m = OnlineDawidSkene(["reusable", "disposable", "none"])
    for s in range(0, len(items), 16):
        chunk = [r for r in rows if r["item"] in set(items[s:s + 16])]
        m.partial_fit([r["item"] for r in chunk], [r["worker"] for r in chunk], [r["label"] for r in chunk])
        assert _bayes.identifiable(m.confusion_, m.n_eff * m.S)
    its, proba = m.predict_proba_batch([r["item"] for r in rows], [r["worker"] for r in rows],
                                       [r["label"] for r in rows])
    online = np.mean([m.classes_[int(np.argmax(p))] == gold[i] for i, p in zip(its, proba) if i in gold])
    mv = MajorityVote().fit([r["item"] for r in rows], [r["worker"] for r in rows], [r["label"] for r in rows])
    mv_acc = np.mean([lab == gold[i] for i, lab in zip(mv.items_, mv.predict()) if i in gold])
    assert online >= mv_acc - 0.005, (online, mv_acc)
