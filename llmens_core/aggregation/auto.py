"""The default aggregator: Bayesian Dawid-Skene whose structure is chosen per dataset by held-out votes.

**Criterion (no gold).** Every candidate is scored by its *held-out vote log-likelihood*: the items are split
into ``folds`` folds; the candidate is fitted on the other folds, and each vote of a held-out item is hidden in
turn and predicted from the item's other votes (posterior of the item without that vote, times the worker's
fitted confusion row). The score is the mean log-probability per held-out vote; :func:`.selection.choose` applies the
one-standard-error rule to it (the simplest candidate within one standard error of the best). This is
cross-validation that
needs no truth: a model that explains who votes what better predicts a vote it has not seen, and a model with
more parameters than the data supports predicts worse. It is the criterion of model choice, and the safety
net: the simplest candidate, ``pooled`` (one shared accuracy: majority vote with a learned class prior), is
always in the race, so a richer model is used only when it predicts held-out votes better. A candidate is
admitted only while its fits are identifiable (:func:`._bayes.identifiable`: on every class's items the
workers answer that class more often than any other), since a fit that makes one class a copy of another can
predict votes well and still mean nothing.

**Candidates.** The structures of :mod:`._bayes` (``pooled``, ``onecoin``, ``full``, ``shared``, each with an
empirical-Bayes prior), each with a uniform or a learned class prior, and the best of them with the correlated-worker correction of :mod:`.dependence`
(clusters found from residual agreement on the training folds). Ties go to the simpler candidate.

Learned: ``candidate_`` (:class:`~._bayes.Candidate`, its ``name`` e.g. ``"full+class-prior"``), ``cv_scores_``
{candidate name: mean held-out log-likelihood per vote}, ``clusters_`` (:class:`~.dependence.Clusters`), ``confusion_`` (J, K, K), ``priors_`` (K,),
``skills_``/``weights_`` (J,), ``concentration_``, and the sufficient statistics ``counts_`` (J, K, K),
``class_counts_`` (K,), ``pair_stats_`` (2, J, J), ``n_items_with_votes_`` (warm start of the online model).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from llmens_core.aggregation import _bayes, _em, dependence, selection
from llmens_core.aggregation._base import Aggregator
from llmens_core.aggregation._votes import Votes

__all__ = ["AutoDawidSkene", "fit_em", "heldout_loglik"]


@dataclass
class _Units:
    """Votes grouped into units (items, or identical vote patterns with multiplicity ``mult`` (U,))."""

    unit: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    mult: np.ndarray
    n_units: int
    n_workers: int
    n_classes: int


def _units(item, worker, label, n_items, J, K, compress=True) -> tuple[_Units, np.ndarray]:
    """Units for EM and the unit of each item (I,)."""
    packed = _em.compress_patterns(item, worker, label, n_items, J, K) if compress else None
    if packed is None:
        has = np.bincount(item, minlength=n_items) > 0
        return _Units(item, worker, label, has.astype(float), n_items, J, K), np.arange(n_items)
    unit_of_item, mult, unit, w, lab = packed
    return _Units(unit, w, lab, mult, len(mult), J, K), unit_of_item


@dataclass
class _Fit:
    fitted: _bayes.Fitted
    T: np.ndarray
    counts: np.ndarray
    class_counts: np.ndarray
    n_iter: int


def fit_em(d: _Units, cand: _bayes.Candidate, weights: np.ndarray | None = None, *, n_iter: int = 100,
           tol: float = 1e-7) -> _Fit:
    """EM for one candidate's structure and class prior from a (weighted) majority-vote start; ``weights``
    (V,) the votes' posterior weights (None = 1)."""
    K = d.n_classes
    wl = d.worker * K + d.label
    ones = np.ones(len(d.unit)) if weights is None else weights
    scores = np.stack([np.bincount(d.unit, weights=ones * (d.label == k), minlength=d.n_units)
                       for k in range(K)], axis=1)
    tot = scores.sum(axis=1, keepdims=True)
    T = np.where(tot > 0, scores / np.where(tot > 0, tot, 1.0), 1.0 / K)
    ll_old, done = -np.inf, 0
    for done in range(1, max(1, n_iter) + 1):  # noqa: B007 - the count is returned
        Tm = T * d.mult[:, None]
        N = _em.confusion_counts(d.unit, wl, Tm, d.n_workers)
        fitted = _bayes.m_step(N, Tm.sum(axis=0), cand.structure, cand.class_prior)
        lj = _em.log_joint(d.unit, wl, weights, np.log(fitted.pi), np.log(fitted.theta), d.n_units)
        T, lse = _em.softmax_rows(lj)
        ll = float(d.mult @ lse)
        if abs(ll - ll_old) <= tol * max(1.0, abs(ll)):
            break
        ll_old = ll
    Tm = T * d.mult[:, None]
    return _Fit(fitted, T, _em.confusion_counts(d.unit, wl, Tm, d.n_workers), Tm.sum(axis=0), done)


def fit_candidate(d: _Units, cand: _bayes.Candidate, hint: np.ndarray | None, tol: float = 1e-7
                  ) -> tuple[_Fit, dependence.Clusters, dependence.PairStats]:
    """Fit one candidate; a dependent one finds its clusters from the agreement counts
    (:func:`.dependence.find_clusters`) and fits with the clusters' vote weights."""
    pairs = dependence.pair_stats(d.unit, d.worker, d.label, d.n_workers, d.mult)
    clusters = dependence.INDEPENDENT(d.n_workers)
    weights = None
    if cand.dependent:
        clusters = dependence.find_clusters(pairs, d.n_classes, hint)
        weights = dependence.vote_weights(d.unit, d.worker, clusters)
    return fit_em(d, cand, weights, tol=tol), clusters, pairs


def heldout_loglik(item, worker, label, n_items, J, K, cand, hint, folds=5, seed=0
                   ) -> tuple[np.ndarray, int, bool]:
    """Held-out vote log-likelihood of one candidate summed per item, shape (I,), the number of votes scored
    (see the module docstring; a vote alone on its item is not scored: nothing predicts it), and whether every
    training-fold fit was identifiable (:func:`._bayes.identifiable`)."""
    fold = np.random.default_rng(seed).permutation(n_items) % folds
    per_item, n, ok = np.zeros(n_items), 0, True
    for f in range(folds):
        test = fold[item] == f
        if not test.any() or test.all():
            continue
        train, _ = _units(item[~test], worker[~test], label[~test], n_items, J, K)
        fit, clusters, _ = fit_candidate(train, cand, hint, tol=1e-6)
        ok = ok and _bayes.identifiable(fit.fitted.theta, fit.counts)
        it, wk, lb = item[test], worker[test], label[test]
        c = dependence.vote_weights(it, wk, clusters)
        copy = dependence.copy_terms(it, wk, lb, clusters)
        ll = _bayes.loo_vote_loglik(it, wk, lb, c, fit.fitted.theta, fit.fitted.pi, n_items, copy)
        scored = np.bincount(it, minlength=n_items)[it] >= 2
        per_item += np.bincount(it[scored], weights=ll[scored], minlength=n_items)
        n += int(scored.sum())
    return per_item, n, ok


class AutoDawidSkene(Aggregator):
    """Bayesian Dawid-Skene with the structure chosen by held-out vote likelihood (see the module docstring).

    Args:
        families: optional hint worker -> family (e.g. ``EndpointConfig.family``): members of one family are
            clustered when their excess agreement is positive; the strength is still fitted from the votes.
        folds, seed: the cross-validation split (the seed only makes the split reproducible).
        candidates: independent candidates to consider (default :data:`_bayes.INDEPENDENT_CANDIDATES`, or
            names such as ``"full+class-prior"``); ``dependence`` whether to also consider the best of them
            with the correlated-worker correction.
        classes: fix the label set and its order.
    """

    def __init__(self, *, families: Mapping[Hashable, Hashable] | None = None, folds: int = 5, seed: int = 0,
                 candidates: Sequence[_bayes.Candidate | str] = _bayes.INDEPENDENT_CANDIDATES,
                 dependence: bool = True,
                 classes: Sequence[Hashable] | None = None, n_iter: int = 100):
        if isinstance(families, str):
            raise ValueError("families is a mapping worker -> family (a hint), not a naming rule")
        self.families = families
        self.folds = int(folds)
        self.seed = int(seed)
        self.candidates = tuple(c if isinstance(c, _bayes.Candidate) else _bayes.Candidate.parse(c)
                                for c in candidates)
        self.dependence = bool(dependence)
        self.classes = classes
        self.n_iter = n_iter

    def _hint(self, workers: np.ndarray) -> np.ndarray | None:
        if not self.families:
            return None
        codes: dict = {}
        return np.asarray([codes.setdefault(self.families[w], len(codes)) if w in self.families else -1
                           for w in workers.tolist()], dtype=np.int64)

    def _select(self, votes: Votes, hint) -> _bayes.Candidate:
        """:func:`.selection.choose` on the cross-validated scores of the independent candidates, then of the
        chosen one's dependent version; the scores are kept (``cv_*_``) for the online warm start."""
        args = (votes.item, votes.worker, votes.label, votes.n_items, votes.n_workers, votes.n_classes)
        allowed = tuple(c for c in self.candidates if not c.dependent)
        per_unit = np.zeros((votes.n_items, len(_bayes.ALL_CANDIDATES)))
        col = {c: i for i, c in enumerate(_bayes.ALL_CANDIDATES)}
        n, ok = 0, dict.fromkeys(allowed, True)
        if len(allowed) > 1 or self.dependence:
            for c in allowed:
                per_unit[:, col[c]], n, ok[c] = heldout_loglik(*args, c, hint, self.folds, self.seed)
        scored = allowed
        allowed = tuple(c for c in allowed if ok[c]) or allowed[:1]  # the simplest one is the safety net
        chosen = selection.choose(*selection.moments(per_unit), votes.n_items, n, allowed)
        if self.dependence:
            dep = _bayes.Candidate(chosen.structure, chosen.class_prior, True)
            per_unit[:, col[dep]], n, ok[dep] = heldout_loglik(*args, dep, hint, self.folds, self.seed)
            scored += (dep,)
            if ok[dep]:
                allowed += (dep,)
                chosen = selection.choose(*selection.moments(per_unit), votes.n_items, n, allowed)
        self.cv_total_, self.cv_m2_ = selection.moments(per_unit)
        self.cv_votes_ = float(n)
        self.cv_scores_ = {c.name: float(self.cv_total_[col[c]]) / max(n, 1) for c in scored}
        self.admissible_ = allowed
        return chosen

    def _fit_identifiable(self, d: _Units, chosen: _bayes.Candidate, hint, n_items: int):
        """Fit ``chosen`` on all the votes; while that fit is not identifiable, the next choice among the
        admissible candidates without it (the simplest candidate ends the walk)."""
        left = list(self.admissible_)
        while True:
            fit, clusters, pairs = fit_candidate(d, chosen, hint)
            if _bayes.identifiable(fit.fitted.theta, fit.counts) or chosen == left[0]:
                return chosen, fit, clusters, pairs
            left.remove(chosen)
            chosen = selection.choose(self.cv_total_, self.cv_m2_, n_items, self.cv_votes_, tuple(left))

    def _fit(self, votes: Votes) -> None:
        J, K = votes.n_workers, votes.n_classes
        hint = self._hint(votes.workers)
        chosen = self._select(votes, hint)
        d, unit_of_item = _units(votes.item, votes.worker, votes.label, votes.n_items, J, K)
        self.candidate_, fit, self.clusters_, pairs = self._fit_identifiable(d, chosen, hint, votes.n_items)
        self.pair_stats_ = pairs.as_array()
        self.confusion_, self.priors_ = fit.fitted.theta, fit.fitted.pi
        self.concentration_ = fit.fitted.concentration
        self.n_iter_ = fit.n_iter
        self.counts_, self.class_counts_ = fit.counts, fit.class_counts
        self.n_items_with_votes_ = float(d.mult[np.bincount(d.unit, minlength=d.n_units) > 0].sum())
        self.skills_ = np.einsum("k,jkk->j", self.priors_, self.confusion_)
        p = np.clip(self.skills_, 1e-9, 1 - 1e-9)
        self.weights_ = np.log((max(K, 2) - 1) * p / (1 - p))
        self._fitted_T = fit.T[unit_of_item]

    def _proba(self, votes: Votes) -> np.ndarray:
        if votes.workers is self.workers_ and not hasattr(self, "_fitted_proba"):
            return self._fitted_T
        K = len(self.classes_)
        prior = _bayes.m_step(np.zeros((1, K, K)), np.zeros(K), "pooled").theta
        theta = np.concatenate([self.confusion_, prior], axis=0)  # unknown workers (code J): the weak prior
        code = np.append(self.clusters_.code, len(self.clusters_.rho))
        clusters = dependence.Clusters(code, np.append(self.clusters_.rho, 0.0))
        c = dependence.vote_weights(votes.item, votes.worker, clusters)
        lj = _em.log_joint(votes.item, votes.worker * K + votes.label, c, np.log(self.priors_), np.log(theta),
                           votes.n_items)
        return _em.softmax_rows(lj)[0]
