"""Item difficulty (llmens_core.aggregation.difficulty): the maths, and the race on graded crowds."""

import numpy as np
import pytest
from agg_synth import graded_crowd_with_hard_items
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.aggregation import METHODS, OnlineDawidSkene, _bayes, _em, difficulty

ADULT_SHAPE = {"n_items": 3000, "n_workers": 300, "votes_per_item": 5, "prior": (0.6, 0.2, 0.12, 0.08)}


def _rows(seed: int, J: int, K: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(K), size=(J, K))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), J=st.integers(1, 5), K=st.integers(2, 5), t=st.floats(0.05, 1.0))
def test_tempered_rows_are_distributions_that_spread_more(seed, J, K, t):
    theta = _rows(seed, J, K)
    hard = difficulty.temper(theta, t)
    np.testing.assert_allclose(hard.sum(axis=-1), 1.0)
    np.testing.assert_allclose(difficulty.temper(theta, 1.0), theta, atol=1e-12)
    entropy = lambda p: -(p * np.log(p)).sum(axis=-1)  # noqa: E731
    assert (entropy(hard) >= entropy(theta) - 1e-9).all()  # tempering never sharpens a row


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(2, 5), rho=st.floats(0.01, 0.99), t=st.floats(0.05, 0.95))
def test_split_keeps_the_class_posteriors_and_latent_is_a_distribution(seed, K, rho, t):
    rng = np.random.default_rng(seed)
    J, U = 4, 7
    fitted = _bayes.Fitted(_rows(seed, J, K), rng.dirichlet(np.ones(K)), 1.0, hard_share=rho, temper=t)
    theta, pi = difficulty.latent(fitted)
    assert theta.shape == (J, 2 * K, K) and pi.shape == (2 * K,)
    assert pi.sum() == pytest.approx(1.0) and pi[K:].sum() == pytest.approx(rho)
    unit = np.repeat(np.arange(U), 3)
    worker = rng.integers(0, J, len(unit))
    wl = worker * K + rng.integers(0, K, len(unit))
    T = rng.dirichlet(np.ones(K), size=U)
    split = difficulty.split(T, unit, wl, None, fitted)
    np.testing.assert_allclose(difficulty.classes(split, K), T, atol=1e-12)
    assert (split >= 0).all()
    # the split is the posterior over (class, difficulty) of the fit itself when T is that fit's
    post = _em.softmax_rows(_em.log_joint(unit, wl, None, np.log(pi), np.log(theta), U))[0]
    np.testing.assert_allclose(difficulty.split(difficulty.classes(post, K), unit, wl, None, fitted), post,
                               atol=1e-9)


def test_a_fit_without_difficulty_is_its_own_latent_model():
    fitted = _bayes.Fitted(_rows(0, 3, 3), np.full(3, 1 / 3), 1.0)
    theta, pi = difficulty.latent(fitted)
    assert theta is fitted.theta and pi is fitted.pi and not difficulty.found(fitted)


def _accuracy(model, items, workers, labels, truth) -> float:
    pred = model.fit_predict(items, workers, labels)
    return float(np.mean(pred.astype(int) == truth[model.items_.astype(int)]))


@pytest.mark.parametrize("seed", [100, 101])
def test_hard_items_of_a_skewed_graded_crowd_are_modelled_and_the_default_beats_majority(seed):
    """The adult-rating shape (four grades, 60 % in the first, 40 % of the items hard for everyone): without a
    place for difficulty the default chose ``full`` and decided 76.9 / 78.7 % against majority vote's 83.4 /
    84.0 (seeds 100 / 101); with it the race takes a ``+difficulty`` candidate and ends above majority vote."""
    it, wk, lb, z = graded_crowd_with_hard_items(np.random.default_rng(seed), hard=0.4, **ADULT_SHAPE)
    default = METHODS["default"]()
    acc, mv = _accuracy(default, it, wk, lb, z), _accuracy(METHODS["mv"](), it, wk, lb, z)
    assert default.candidate_.difficulty, default.choice_
    assert 0.0 < default.hard_share_ < 1.0 and default.temper_ < 1.0
    assert acc >= mv, (acc, mv)


def test_a_crowd_without_hard_items_keeps_plain_dawid_skene():
    it, wk, lb, z = graded_crowd_with_hard_items(np.random.default_rng(5), hard=0.0, **ADULT_SHAPE)
    default = METHODS["default"]()
    assert _accuracy(default, it, wk, lb, z) >= 0.99
    assert not default.candidate_.difficulty, default.choice_


def test_binary_labels_race_no_difficulty():
    it, wk, lb, _ = graded_crowd_with_hard_items(np.random.default_rng(1), n_items=300, hard=0.4, prior=(0.7, 0.3))
    default = METHODS["default"]().fit(it, wk, lb)
    assert not any(c.difficulty for c, _ in default.options_)


def test_one_online_pass_makes_the_batch_choice_on_hard_items():
    """Online, the statistics carry the hard items' part; one pass in mini-batches of 256 items chooses the batch
    candidate and decides within half a point of it."""
    it, wk, lb, z = graded_crowd_with_hard_items(np.random.default_rng(3), hard=0.4, **ADULT_SHAPE)
    batch = METHODS["default"]()
    acc_batch = _accuracy(batch, it, wk, lb, z)
    online = OnlineDawidSkene()
    order = np.argsort(np.random.default_rng(0).permutation(len(z))[it], kind="stable")
    for s in range(0, len(order), 256 * 5):
        sel = order[s: s + 256 * 5]
        online.partial_fit(it[sel], wk[sel], lb[sel])
    items, proba = online.predict_proba_batch(it, wk, lb)
    acc_online = float(np.mean(np.asarray(online.classes_)[proba.argmax(1)].astype(int) == z[items.astype(int)]))
    assert online.candidate_ == batch.candidate_, (online.candidate_.name, batch.choice_)
    assert acc_online >= acc_batch - 0.005, (acc_online, acc_batch)
    assert online.summary()["difficulty"]["temper"] < 1.0
    restored = OnlineDawidSkene.from_bytes(online.to_bytes())
    np.testing.assert_array_equal(restored.predict_proba_batch(it, wk, lb)[1], proba)
    votes = dict(zip(wk[it == 0].tolist(), lb[it == 0].tolist(), strict=True))
    np.testing.assert_allclose(online.posterior(votes), proba[list(items).index(0)], atol=1e-12)
