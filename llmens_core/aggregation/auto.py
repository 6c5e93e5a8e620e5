"""The default aggregator: Bayesian Dawid-Skene whose structure is chosen per dataset by held-out votes.

**Criterion (no gold).** Every candidate is scored by its *held-out vote log-likelihood*: the items are split
into ``folds`` folds; the candidate is fitted on the other folds, and each vote of a held-out item is hidden in
turn and predicted from the item's other votes (posterior of the item without that vote, times the worker's
fitted confusion row). The score is the mean log-probability per held-out vote; :func:`.selection.simplest_within`
applies the one-standard-error rule to it (the simplest candidate within one standard error of the best). This is
cross-validation that
needs no truth: a model that explains who votes what better predicts a vote it has not seen, and a model with
more parameters than the data supports predicts worse. It is the criterion of model choice, and the safety
net: the simplest candidate, ``pooled`` (one shared accuracy: majority vote with a learned class prior), is
always in the race, so a richer model is used only when it predicts held-out votes better. A candidate is
admitted only while its fits are identifiable (:func:`._bayes.identifiable`: on every class's items the
workers on average, or at least one of them, answer that class more often than any other), since a fit that
makes one class a copy of another can predict votes well and still mean nothing.

**Candidates.** The structures of :mod:`._bayes` (``pooled``, ``onecoin``, ``full``, and ``shared`` for binary
labels (:func:`._bayes.candidates_for`), each with an empirical-Bayes prior), each with a uniform or a learned
class prior; on three labels or more the same with item difficulty (:mod:`.difficulty`); and the best of them
with the correlated-worker correction of :mod:`.dependence` (clusters found from residual agreement on the
training folds). Ties go to the simpler candidate. When some
workers answered at least half of the items, every candidate is also raced ``+multistart``: EM from each of
:func:`em_starts` (the majority-vote start and one per dense worker), keeping the fit of highest likelihood. The
structure is picked among each start's candidates, and the multistart pick replaces the majority-start one only
when it predicts held-out votes more than one standard error better: the majority's basin is left only for a
clearly better one, and the race alone never moves the majority-start pick.

Learned: ``candidate_`` (:class:`~._bayes.Candidate`, its ``name`` e.g. ``"full+class-prior"``), ``multistart_``
(bool) and ``choice_`` (the name with ``"+multistart"`` when it applies), ``options_`` (the race, (candidate,
multistart) pairs) and ``admissible_`` (those whose training-fold fits were identifiable), ``cv_scores_``
{choice name: mean held-out log-likelihood per vote}, ``clusters_`` (:class:`~.dependence.Clusters`), ``confusion_`` (J, K, K), ``priors_`` (K,),
``skills_``/``weights_`` (J,), ``concentration_``, ``hard_share_``/``temper_`` (:mod:`.difficulty`; 0 and 1 without),
and the sufficient statistics ``counts_`` (J, K, K),
``class_counts_`` (K,), their hard items' part ``hard_counts_``/``hard_class_counts_``, ``pair_stats_`` (2, J, J), ``n_items_with_votes_``, with ``cv_total_`` (C,) / ``cv_m2_``
(C, C) / ``cv_votes_``: the scores by :data:`._bayes.ALL_CANDIDATES` on which the online criterion makes this
choice (the warm start of the online model, :meth:`~.online.OnlineDawidSkene.from_batch`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmens_core.aggregation import _bayes, _em, batched, dependence, difficulty, selection
from llmens_core.aggregation._base import Aggregator
from llmens_core.aggregation._votes import Votes

__all__ = ["AutoDawidSkene", "best_fit", "cv_folds", "cv_repeats", "dense_workers", "em_starts", "fit_em", "heldout_loglik",
           "repeated_patterns"]


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
    derived: dict = field(default_factory=dict, repr=False, compare=False)
    """What is derived from these votes once for every candidate fitted on them (pair statistics, clusters)."""

    def pairs(self) -> dependence.PairStats:
        """The agreement counts of every worker pair on these units (:func:`.dependence.pair_stats`)."""
        if "pairs" not in self.derived:
            self.derived["pairs"] = dependence.pair_stats(self.unit, self.worker, self.label, self.n_workers,
                                                          self.mult)
        return self.derived["pairs"]

    def clusters(self, hint: np.ndarray | None) -> dependence.Clusters:
        """The correlated-worker clusters of these votes (:func:`.dependence.find_clusters`)."""
        key = ("clusters", None if hint is None else hint.tobytes())
        if key not in self.derived:
            self.derived[key] = dependence.find_clusters(self.pairs(), self.n_classes, hint)
        return self.derived[key]


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
    """One EM fit: class posteriors ``T`` (U, K), soft ``counts`` (J, K, K) and ``class_counts`` (K,), and the
    hard items' part of them (``hard_counts``, ``hard_class_counts``; zero without difficulty)."""

    fitted: _bayes.Fitted
    T: np.ndarray
    counts: np.ndarray
    class_counts: np.ndarray
    n_iter: int
    log_likelihood: float
    hard_counts: np.ndarray | None = None
    hard_class_counts: np.ndarray | None = None


def majority_start(d: _Units, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) vote shares per unit, shape (U, K): EM's usual start."""
    K = d.n_classes
    ones = np.ones(len(d.unit)) if weights is None else weights
    scores = np.stack([np.bincount(d.unit, weights=ones * (d.label == k), minlength=d.n_units)
                       for k in range(K)], axis=1)
    tot = scores.sum(axis=1, keepdims=True)
    return np.where(tot > 0, scores / np.where(tot > 0, tot, 1.0), 1.0 / K)


def dense_workers(d: _Units) -> np.ndarray:
    """Workers who answered at least half of the items (they open a basin of their own in :func:`em_starts`)."""
    answered = np.bincount(d.worker, weights=d.mult[d.unit], minlength=d.n_workers)
    return np.flatnonzero(answered >= 0.5 * d.mult.sum())


def em_starts(d: _Units, weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Starting posteriors (U, K) for EM: the majority-vote shares, then, for every worker who answered at
    least half of the items, the same with that worker's answers taken as the truth where it answered.

    Dawid-Skene's likelihood has one basin per way of deciding who is right; from the majority-vote start EM
    stays in the basin where the majority is, even when a minority of workers who agree with each other
    elsewhere explains the votes better. A dense worker's start opens the basin in which that worker is
    right; which basin is kept is decided by the likelihood (:func:`fit_candidate`), not by the start."""
    mv = majority_start(d, weights)
    out = [mv]
    for j in dense_workers(d):
        own = d.worker == j
        T = mv.copy()
        T[d.unit[own]] = np.eye(d.n_classes)[d.label[own]]
        out.append(T)
    return out


def _first_posterior(d: _Units, cand: _bayes.Candidate, weights: np.ndarray | None, start: np.ndarray | None
                     ) -> np.ndarray:
    """EM's starting posterior (U, Z): ``start`` or the (weighted) majority vote, split into (class, difficulty)
    states for a candidate with difficulty."""
    T = majority_start(d, weights) if start is None else start
    if cand.difficulty:
        T = difficulty.first_posterior(d.unit, d.worker * d.n_classes + d.label, weights, T, d.mult, d.n_workers,
                                       cand.structure, cand.class_prior)
    return T


def _final_fit(d: _Units, T: np.ndarray, fitted: _bayes.Fitted, n_iter: int, ll: float, hard: bool) -> _Fit:
    """The :class:`_Fit` of one converged problem, its counts from its last posteriors ``T`` (U, Z)."""
    K = d.n_classes
    Tm = T * d.mult[:, None]
    N = _em.confusion_counts(d.unit, d.worker * K + d.label, Tm, d.n_workers, K)
    if not hard:
        return _Fit(fitted, T, N, Tm.sum(axis=0), n_iter, ll)
    return _Fit(fitted, difficulty.classes(T, K), N[:, :K] + N[:, K:], difficulty.classes(Tm, K).sum(axis=0), n_iter,
                ll, N[:, K:], Tm[:, K:].sum(axis=0))


def fit_em(d: _Units, cand: _bayes.Candidate, weights: np.ndarray | None = None, *, n_iter: int = 100,
           tol: float = 1e-7, start: np.ndarray | None = None) -> _Fit:
    """EM for one candidate's structure, class prior and difficulty from ``start`` (U, K) (default: the
    (weighted) majority vote); ``weights`` (V,) the votes' posterior weights (None = 1). With difficulty, EM runs
    over (class, difficulty) states (:mod:`.difficulty`) and the fit reports the class posteriors."""
    K = d.n_classes
    wl = d.worker * K + d.label
    T = _first_posterior(d, cand, weights, start)
    ll_old, ll, done = -np.inf, -np.inf, 0
    for done in range(1, max(1, n_iter) + 1):  # noqa: B007 - the count is returned
        Tm = T * d.mult[:, None]
        N = _em.confusion_counts(d.unit, wl, Tm, d.n_workers, K)
        if cand.difficulty:
            fitted = difficulty.m_step(N, Tm.sum(axis=0), cand.structure, cand.class_prior)
        else:
            fitted = _bayes.m_step(N, Tm.sum(axis=0), cand.structure, cand.class_prior)
        theta, pi = difficulty.latent(fitted)
        lj = _em.log_joint(d.unit, wl, weights, np.log(pi), np.log(theta), d.n_units)
        T, lse = _em.softmax_rows(lj)
        ll = float(d.mult @ lse)
        if abs(ll - ll_old) <= tol * max(1.0, abs(ll)):
            break
        ll_old = ll
    return _final_fit(d, T, fitted, done, ll, cand.difficulty)


BATCH_CELLS = 200_000
"""At most this many confusion cells (problems x J x K x K) in one batch of :func:`fit_em_many` (bounds its memory)."""


@dataclass
class _Stack:
    """The votes of several EM problems side by side: problem ``p``'s units after the earlier problems' units, its
    workers ``p J .. p J + J - 1``; ``offsets`` (P + 1,) the first unit of each, ``of_unit`` (U,) its problem, and
    the votes as the sparse matrices of :func:`._em.vote_matrices` (``by_unit``, ``by_cell``)."""

    mult: np.ndarray
    offsets: np.ndarray
    of_unit: np.ndarray
    by_unit: object
    by_cell: object

    @classmethod
    def of(cls, problems: list) -> _Stack:
        K, J = problems[0][0].n_classes, problems[0][0].n_workers
        sizes = np.array([d.n_units for d, _, _ in problems])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        weighted = any(w is not None for _, w, _ in problems)
        unit = np.concatenate([d.unit + offsets[p] for p, (d, _, _) in enumerate(problems)])
        wl = np.concatenate([(d.worker + p * J) * K + d.label for p, (d, _, _) in enumerate(problems)])
        weights = np.concatenate([np.ones(len(d.unit)) if w is None else w for d, w, _ in problems]) \
            if weighted else None
        return cls(np.concatenate([d.mult for d, _, _ in problems]), offsets, np.repeat(np.arange(len(problems)), sizes),
                   *_em.vote_matrices(unit, wl, weights, int(offsets[-1]), len(problems) * J * K))

    def part(self, problems: np.ndarray, n_cells: int) -> _Part:
        """The rows of ``problems`` (indices, ascending), each with ``n_cells`` confusion cells."""
        units = np.concatenate([np.arange(self.offsets[p], self.offsets[p + 1]) for p in problems])
        cells = np.concatenate([np.arange(p * n_cells, (p + 1) * n_cells) for p in problems])
        sizes = self.offsets[problems + 1] - self.offsets[problems]
        return _Part(units, cells, self.by_unit[units], self.by_cell[cells], np.concatenate([[0], np.cumsum(sizes)]),
                     np.repeat(np.arange(len(problems)), sizes))


@dataclass
class _Part:
    """The problems of a :class:`_Stack` still iterating: their ``units`` and ``cells`` (indices into the stack's),
    the stack's vote matrices restricted to their rows, and their units' ``offsets`` and problem ``of_unit``."""

    units: np.ndarray
    cells: np.ndarray
    by_unit: object
    by_cell: object
    offsets: np.ndarray
    of_unit: np.ndarray


def fit_em_many(problems: Sequence[tuple[_Units, np.ndarray | None, np.ndarray | None]], cand: _bayes.Candidate, *,
                n_iter: int = 100, tol: float = 1e-7) -> list[_Fit]:
    """:func:`fit_em` on each ``(units, weights, start)`` problem (the same workers and classes), run side by side:
    one set of numpy calls per EM iteration for all of them (:mod:`.batched`), each stopping at its own
    convergence. The race's many small fits cost what a few do."""
    problems = list(problems)
    if not problems or any(d.n_units == 0 for d, _, _ in problems):
        return [fit_em(d, cand, w, n_iter=n_iter, tol=tol, start=start) for d, w, start in problems]
    J, K = problems[0][0].n_workers, problems[0][0].n_classes
    chunk = max(1, BATCH_CELLS // max(1, J * K * K))
    if len(problems) > chunk:
        return [f for i in range(0, len(problems), chunk)
                for f in fit_em_many(problems[i:i + chunk], cand, n_iter=n_iter, tol=tol)]
    T_all = np.concatenate([_first_posterior(d, cand, w, start) for d, w, start in problems])
    Z = T_all.shape[1]
    stack = _Stack.of(problems)
    out: list[_Fit | None] = [None] * len(problems)
    active, ll_old, at, part = np.arange(len(problems)), np.full(len(problems), -np.inf), None, None
    for done in range(1, max(1, n_iter) + 1):
        part = part or stack.part(active, J * K)
        Tm = T_all * stack.mult[:, None]
        N = np.ascontiguousarray((part.by_cell @ Tm).reshape(len(active), J, K, Z).transpose(0, 1, 3, 2))
        params = batched.m_step(N, np.add.reduceat(Tm[part.units], part.offsets[:-1], axis=0), cand.structure,
                                cand.class_prior, cand.difficulty, at)
        theta, pi = batched.latent(params, cand.difficulty)
        lt = np.zeros((len(problems) * J * K, Z))
        lt[part.cells] = np.log(theta).transpose(0, 1, 3, 2).reshape(-1, Z)
        T_part, lse = _em.softmax_rows(part.by_unit @ lt + np.log(pi)[part.of_unit])
        T_all[part.units] = T_part
        for i, p in enumerate(active):
            lo, hi = part.offsets[i], part.offsets[i + 1]
            ll = float(problems[p][0].mult @ lse[lo:hi])
            if abs(ll - ll_old[p]) <= tol * max(1.0, abs(ll)) or done == max(1, n_iter):
                out[p] = _final_fit(problems[p][0], T_part[lo:hi], batched.fitted(params, i), done, ll,
                                    cand.difficulty)
            ll_old[p] = ll
        going = np.array([out[p] is None for p in active])
        at = {k: v[going] for k, v in params["at"].items()}
        if not going.all():
            active, part = active[going], None
        if not len(active):
            break
    return out


def _start_key(fit: _Fit) -> tuple[bool, float]:
    """How fits from different starts rank: identifiable first, then by vote log-likelihood."""
    return _bayes.identifiable(fit.fitted.theta, fit.counts), fit.log_likelihood


def best_fit(d: _Units, cand: _bayes.Candidate, weights: np.ndarray | None = None, tol: float = 1e-7) -> _Fit:
    """EM from every start of :func:`em_starts`; the identifiable fit of highest vote log-likelihood is kept
    (the majority-vote start wins ties; with no identifiable fit, the highest likelihood)."""
    best = None
    for start in em_starts(d, weights):
        fit = fit_em(d, cand, weights, tol=tol, start=start)
        if best is None or _start_key(fit) > _start_key(best):
            best = fit
    return best


def _clusters_of(d: _Units, cand: _bayes.Candidate, hint: np.ndarray | None
                 ) -> tuple[dependence.Clusters, np.ndarray | None]:
    """The clusters a candidate fits with (independent, or found from the agreement counts by
    :func:`.dependence.find_clusters` for a dependent one) and their vote weights (V,) or None. The counts and the
    clusters are derived once per set of votes, whatever the candidates fitted on them."""
    if not cand.dependent:
        return dependence.INDEPENDENT(d.n_workers), None
    clusters = d.clusters(hint)
    return clusters, dependence.vote_weights(d.unit, d.worker, clusters)


def fit_candidate(d: _Units, cand: _bayes.Candidate, hint: np.ndarray | None, tol: float = 1e-7,
                  multistart: bool = False) -> tuple[_Fit, dependence.Clusters, dependence.PairStats]:
    """Fit one candidate; a dependent one fits with its clusters' vote weights (:func:`_clusters_of`)."""
    clusters, weights = _clusters_of(d, cand, hint)
    fit = best_fit(d, cand, weights, tol=tol) if multistart else fit_em(d, cand, weights, tol=tol)
    return fit, clusters, d.pairs()


@dataclass
class _Fold:
    """One cross-validation fold: the training votes as EM units, and the held-out votes grouped by vote
    pattern (``unit`` (V',) of one representative item per pattern, ``unit_of_item`` (I,), ``mult`` (U,)), with
    ``scored`` (V',) the votes that are not alone on their item."""

    train: _Units
    unit: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    unit_of_item: np.ndarray
    mult: np.ndarray
    scored: np.ndarray
    weight: float = 1.0


def set_keys(item: np.ndarray, code: np.ndarray, n_items: int) -> np.ndarray:
    """A 64-bit key per item (n_items,) of the set of non-negative ints ``code`` (V,) it has (0 without any): a sum
    of splitmix64 hashes, so equal sets give equal keys whatever the codes' range (the online model's keys stay
    valid as workers and classes are added); distinct sets collide with probability ~2**-64 per pair."""
    x = code.astype(np.uint64)
    keys = np.zeros(n_items, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        np.add.at(keys, item, x ^ (x >> np.uint64(31)))
    return keys


def repeated_patterns(item, worker, label, n_items, J, K, level: float = 0.05) -> np.ndarray:
    """Items whose vote pattern comes more often than independent items could give it, as a group code (I,)
    (-1: not repeated).

    Under the ``full+class-prior`` fit, the count of a pattern among the items with the same voters is about
    Poisson with mean (those items) x (the pattern's probability). A pattern whose count is improbably high
    (one-sided Poisson test, Bonferroni over the observed patterns at ``level``, the usual 5 %) is taken for
    copies of one item: a catalogue re-listing a product gets the same answers again. Frequent agreement
    (unanimous patterns) is what the model expects and is not flagged. Votes as in :func:`cv_folds`: int codes
    ``item``, ``worker``, ``label`` (V,) for ``n_items`` items, ``J`` workers, ``K`` classes."""
    d, unit_of_item = _units(item, worker, label, n_items, J, K)
    fit = fit_em(d, _bayes.Candidate("full", "learned"))
    lj = _em.log_joint(d.unit, d.worker * K + d.label, None, np.log(fit.fitted.pi), np.log(fit.fitted.theta),
                       d.n_units)
    p_item = np.exp(_em.softmax_rows(lj)[1])[unit_of_item]
    _, pattern, p_count = np.unique(set_keys(item, worker * K + label, n_items), return_inverse=True,
                                    return_counts=True)
    _, voters, v_count = np.unique(set_keys(item, worker, n_items), return_inverse=True, return_counts=True)
    expected = np.zeros(len(p_count))
    expected[pattern] = v_count[voters] * p_item
    flagged = improbably_repeated(p_count, expected, len(p_count), level)
    return np.where(flagged[pattern], pattern, -1)


def improbably_repeated(count: np.ndarray, expected: np.ndarray, n_patterns: int, level: float = 0.05) -> np.ndarray:
    """The test of :func:`repeated_patterns`: is each pattern's ``count`` (P,) improbably high for a Poisson
    count of mean ``expected`` (P,), at ``level`` with Bonferroni over ``n_patterns``? Boolean (P,)."""
    from scipy.stats import poisson

    return (count >= 2) & (poisson.sf(count - 1, expected) < level / max(n_patterns, 1))


def cv_folds(item, worker, label, n_items, J, K, folds=5, seed=0, repeats=1) -> list[_Fold]:
    """The cross-validation splits of :func:`heldout_loglik`, built once for every candidate it scores: ``repeats``
    random splits into ``folds`` folds, each fold weighted ``1 / repeats`` so that an item's score is its mean over
    the splits. Items are assigned to folds at random, reproducibly by ``seed``, except that the items of a repeated pattern
    (:func:`repeated_patterns`) share one fold: a copy on each side would score the model on what it was fitted
    to (measured: 25 copies of each simulated product took the default from 99.1 % to 87.7 %)."""
    repeated = repeated_patterns(item, worker, label, n_items, J, K)
    copies = np.flatnonzero(repeated >= 0)
    groups, first = np.unique(repeated[copies], return_index=True)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        fold = rng.permutation(n_items) % folds
        if len(copies):
            fold_of_group = np.zeros(repeated.max() + 1, dtype=fold.dtype)
            fold_of_group[groups] = fold[copies[first]]  # each group takes its first item's fold
            fold[copies] = fold_of_group[repeated[copies]]
        for f in range(folds):
            test = fold[item] == f
            if not test.any() or test.all():
                continue
            train, _ = _units(item[~test], worker[~test], label[~test], n_items, J, K)
            held, unit_of_item = _units(item[test], worker[test], label[test], n_items, J, K)
            scored = np.bincount(held.unit, minlength=held.n_units)[held.unit] >= 2
            out.append(_Fold(train, held.unit, held.worker, held.label, unit_of_item, held.mult, scored,
                             1.0 / repeats))
    return out


def _fold_fits(folds: list[_Fold], cand: _bayes.Candidate, hint, multistart: bool
               ) -> list[tuple[dependence.Clusters, dict[bool, _Fit]]]:
    """Each training fold's clusters and fits by start mode (False: from the majority vote; True: the best of
    :func:`em_starts`, as :func:`best_fit` picks it), every fold's EM run side by side (:func:`fit_em_many`)."""
    weighted = [_clusters_of(fold.train, cand, hint) for fold in folds]
    majority = fit_em_many([(f.train, w, None) for f, (_, w) in zip(folds, weighted, strict=True)], cand, tol=1e-6)
    out = [(clusters, {False: fit}) for (clusters, _), fit in zip(weighted, majority, strict=True)]
    if not multistart:
        return out
    others = [(i, start) for i, (f, (_, w)) in enumerate(zip(folds, weighted, strict=True))
              for start in em_starts(f.train, w)[1:]]
    fits = fit_em_many([(folds[i].train, weighted[i][1], start) for i, start in others], cand, tol=1e-6)
    best = {i: majority[i] for i in range(len(folds))}
    for (i, _), fit in zip(others, fits, strict=True):
        if _start_key(fit) > _start_key(best[i]):
            best[i] = fit
    for i, (_, by_start) in enumerate(out):
        by_start[True] = best[i]
    return out


def heldout_loglik(folds: list[_Fold], n_items: int, cand, hint, starts: Sequence[bool] = (False,)
                   ) -> list[tuple[np.ndarray, int, bool]]:
    """Held-out vote log-likelihood of one candidate summed per item, shape (I,), the number of votes scored
    (see the module docstring; a vote alone on its item is not scored: nothing predicts it), and whether every
    training-fold fit was identifiable (:func:`._bayes.identifiable`) and, with difficulty, found hard items
    (:func:`.difficulty.found`): one triple per start mode of ``starts``
    (False: the majority-vote start; True: the best of :func:`em_starts`). A fold's majority-start fit serves
    both modes, and items with the same held-out votes are scored once."""
    per_item, n, ok = {ms: np.zeros(n_items) for ms in starts}, 0, dict.fromkeys(starts, True)
    fits = _fold_fits(folds, cand, hint, any(starts))
    for fold, (clusters, by_start) in zip(folds, fits, strict=True):
        un, wk, lb, sc = fold.unit, fold.worker, fold.label, fold.scored
        n_units = len(fold.mult)
        c = dependence.vote_weights(un, wk, clusters)
        copy = dependence.copy_terms(un, wk, lb, clusters)
        scored_by_fit: dict[int, np.ndarray] = {}
        for ms in starts:
            fit = by_start[ms]
            ok[ms] = ok[ms] and _bayes.identifiable(fit.fitted.theta, fit.counts) and (
                not cand.difficulty or difficulty.found(fit.fitted))
            if id(fit) not in scored_by_fit:
                ll = _bayes.loo_vote_loglik(un, wk, lb, c, *difficulty.latent(fit.fitted), n_units, copy)
                scored_by_fit[id(fit)] = np.bincount(un[sc], weights=ll[sc], minlength=n_units)[fold.unit_of_item]
            per_item[ms] += fold.weight * scored_by_fit[id(fit)]
        n += fold.weight * float(fold.mult[un[sc]].sum())
    return [(per_item[ms], n, ok[ms]) for ms in starts]


def _online_columns(P: np.ndarray, options: list, allowed: list[int], chosen: int) -> np.ndarray:
    """Per-item scores (I, C) by :data:`._bayes.ALL_CANDIDATES` for the online model's criterion, from the race's
    ``P`` (I, len(options)): each admissible candidate as fitted from the chosen start. A candidate that was not
    scored, or not admissible, gets the worst admissible score, so that :func:`.selection.choose` on these
    columns makes the batch choice (an unscored column of zeros would be a perfect score)."""
    start = options[chosen][1]
    same = [i for i in allowed if options[i][1] == start] or allowed
    out = np.repeat(P[:, [min(same, key=lambda i: P[:, i].sum())]], len(_bayes.ALL_CANDIDATES), axis=1)
    col = {c: i for i, c in enumerate(_bayes.ALL_CANDIDATES)}
    for i in sorted(allowed, key=lambda i: options[i][1] == start):  # the chosen start's scores are written last
        out[:, col[options[i][0]]] = P[:, i]
    return out


CV_ITEMS = 500
"""Held-out item evaluations a candidate's score averages at least, by repeating the split (:func:`cv_repeats`)."""
CV_FITS = 5000
"""Bound on repeats x items x EM starts per candidate: the cost of repeating (:func:`cv_repeats`)."""
MAX_REPEATS = 5
"""At most this many splits, a cost bound: with three the choice on the gender votes of :func:`cv_repeats` still
changed with the items' names on 2 of 6 relabellings, with five on none (agreement of choices, no gold)."""


def cv_repeats(n_items: int, n_starts: int) -> int:
    """How many random splits the race averages: enough for :data:`CV_ITEMS` held-out item evaluations, within
    :data:`CV_FITS` item-fits per start and :data:`MAX_REPEATS`. On small data one split decides the race: the
    shipped real-LLM gender votes (53 items) chose the one right model's basin (92.5 %) or the majority's (71.7 %)
    on three of six relabellings of the items each; averaging five splits chose the first on all six. The bounds
    are costs (the race costs ``repeats`` times one split's), not chosen on accuracy."""
    n = max(n_items, 1)
    return max(1, min(MAX_REPEATS, -(-CV_ITEMS // n), CV_FITS // (n * max(n_starts, 1))))


def _choice_name(cand: _bayes.Candidate, multistart: bool) -> str:
    return cand.name + ("+multistart" if multistart else "")


def _independent_pick(P: np.ndarray, options: list, allowed: list[int], starts: tuple, n_items: int, n) -> int:
    """The one-standard-error pick among the admissible independent ``options`` scored in ``P`` (I, options), per
    start mode; the best of :func:`em_starts`' pick replaces the majority-start one only when it is more than one
    standard error better."""
    total, m2 = selection.moments(P)
    per_start = {ms: selection.simplest_within(total, m2, n_items, n, group)
                 for ms in starts if (group := [i for i in allowed if options[i][1] == ms])}
    chosen = per_start.get(False, per_start.get(True))
    if len(per_start) == 2 and not selection.within_one_se(total, m2, n_items, n, per_start[True], chosen):
        chosen = per_start[True]
    return chosen


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
        multistart: ``None`` (the default) lets the criterion choose between EM from the majority-vote start
            and the best of :func:`em_starts`, taking the latter only when it predicts held-out votes more than
            one standard error better; ``False`` / ``True`` fixes one.
        difficulty: whether to also race the independent candidates with item difficulty (:mod:`.difficulty`;
            on three labels or more).
        repeats: random splits whose scores the race averages (repeated cross-validation); ``None``: as many as
            :func:`cv_repeats` gives.
    """

    def __init__(self, *, families: Mapping[Hashable, Hashable] | None = None, folds: int = 5, seed: int = 0,
                 candidates: Sequence[_bayes.Candidate | str] = _bayes.INDEPENDENT_CANDIDATES,
                 dependence: bool = True,
                 classes: Sequence[Hashable] | None = None, n_iter: int = 100, multistart: bool | None = None,
                 difficulty: bool = True, repeats: int | None = None):
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
        self.multistart = multistart
        self.difficulty = bool(difficulty)
        self.repeats = None if repeats is None else int(repeats)

    def _hint(self, workers: np.ndarray) -> np.ndarray | None:
        if not self.families:
            return None
        codes: dict = {}
        return np.asarray([codes.setdefault(self.families[w], len(codes)) if w in self.families else -1
                           for w in workers.tolist()], dtype=np.int64)

    def _select(self, votes: Votes, d: _Units, hint) -> tuple[int, np.ndarray]:
        """The choice (candidate, multistart): its index in ``options_``, and the race's per-item scores (I, options).

        The one-standard-error rule (:func:`.selection.simplest_within`) picks a structure among the independent
        candidates fitted from the majority-vote start and, when there are dense workers, separately among the
        same fitted from the best of :func:`em_starts`; the second pick is taken only if it is more than one
        standard error better than the first (another basin than the majority's must predict held-out votes
        clearly better, and racing the starts never moves the majority-start pick). On three labels or more the
        same rule picks among the ``+difficulty`` candidates (:mod:`.difficulty`); that pick qualifies when it is
        more than one standard error better than both the pick so far and its own twin without difficulty (the
        gain must come from the hard items, not from another structure or class prior). The pick's dependent
        version qualifies when it is more than one standard error better than the pick. Of those that qualify,
        the better-scoring is taken (see :mod:`.selection`)."""
        n_dense = len(dense_workers(d))
        if self.multistart is None:
            starts = (False, True) if n_dense else (False,)
        else:
            starts = (bool(self.multistart),)
        indep, hard = self._raced_candidates(votes.n_classes)
        options = [(c, ms) for c in indep for ms in starts]
        per_option, ok, n, folds = [np.zeros(votes.n_items)], [True], 0, []
        if len(options) > 1 or self.dependence or hard:
            repeats = cv_repeats(votes.n_items, n_dense + 1 if True in starts else 1) if self.repeats is None \
                else self.repeats
            folds = cv_folds(votes.item, votes.worker, votes.label, votes.n_items, votes.n_workers,
                             votes.n_classes, self.folds, self.seed, repeats)
            per_option, ok = [], []
            for c in indep:
                per_start_mode = heldout_loglik(folds, votes.n_items, c, hint, starts)
                per_option += [scores for scores, _, _ in per_start_mode]
                ok += [good for _, _, good in per_start_mode]
                n = per_start_mode[0][1]
        allowed = [i for i, good in enumerate(ok) if good] or [0]  # the simplest one is the safety net
        P = np.stack(per_option, axis=1)
        base, first = _independent_pick(P, options, allowed, starts, votes.n_items, n), len(options)
        P, n, dependent = self._race_richer(folds, votes.n_items, hint, hard, options, allowed, P, n, base, starts)
        total, m2 = selection.moments(P)
        chosen = selection.richer(total, m2, votes.n_items, n, base,
                                  [i for i in allowed if first <= i and options[i][0].difficulty],
                                  lambda i: options.index((options[i][0].twin, starts[0])), dependent)
        self.options_ = options
        self.cv_option_total_, self.cv_option_m2_ = total, m2
        self.admissible_ = [options[i] for i in allowed]
        self.cv_votes_ = float(n)
        self.cv_scores_ = {_choice_name(*o): float(t) / max(n, 1) for o, t in zip(options, self.cv_option_total_)}
        return chosen, P

    def _raced_candidates(self, n_classes: int) -> tuple[list[_bayes.Candidate], list[_bayes.Candidate]]:
        """The independent candidates raced and those with item difficulty, each simplest first."""
        named_hard = [c for c in self.candidates if c.difficulty and not c.dependent]
        own = [c for c in self.candidates if not c.dependent and not c.difficulty] or [c.twin for c in named_hard]
        own_hard = [c for c in _bayes.DIFFICULTY_CANDIDATES if c.twin in own] if self.difficulty else []
        raced = _bayes.candidates_for(list(dict.fromkeys(own + own_hard + named_hard)), n_classes)
        indep = sorted((c for c in raced if not c.difficulty), key=_bayes.ALL_CANDIDATES.index)
        hard = sorted((c for c in raced if c.difficulty), key=_bayes.ALL_CANDIDATES.index)
        return indep, hard

    def _race_richer(self, folds, n_items: int, hint, hard: list, options: list, allowed: list, P: np.ndarray,
                     n, base: int, starts: tuple) -> tuple[np.ndarray, float, int | None]:
        """Score the candidates with difficulty and the pick ``base``'s dependent version, appending them to
        ``options``, ``allowed`` (when admissible) and the scores ``P`` (I, options); returns ``P``, the votes scored
        and the dependent version's index (None when not admissible or not raced)."""
        dependent = None
        for c in hard:
            [(scores, n, good)] = heldout_loglik(folds, n_items, c, hint, starts[:1])
            options.append((c, starts[0]))
            P = np.concatenate([P, scores[:, None]], axis=1)
            if good:
                allowed.append(len(options) - 1)
        if self.dependence:
            c, ms = options[base]
            [(scores, n, good)] = heldout_loglik(folds, n_items,
                                                 _bayes.Candidate(c.structure, c.class_prior, True), hint, (ms,))
            options.append((_bayes.Candidate(c.structure, c.class_prior, True), ms))
            P = np.concatenate([P, scores[:, None]], axis=1)
            if good:
                allowed.append(len(options) - 1)
                dependent = len(options) - 1
        return P, n, dependent

    def _fit_identifiable(self, d: _Units, chosen: int, hint, n_items: int):
        """Fit option ``chosen`` on all the votes; while that fit is not identifiable, the next choice among the
        admissible options without it (the simplest one ends the walk). Returns the option's index, the options
        left admissible, the fit, its clusters and pair statistics."""
        left = [self.options_.index(o) for o in self.admissible_]
        while True:
            cand, ms = self.options_[chosen]
            fit, clusters, pairs = fit_candidate(d, cand, hint, multistart=ms)
            if _bayes.identifiable(fit.fitted.theta, fit.counts) or chosen == left[0]:
                return chosen, left, fit, clusters, pairs
            left.remove(chosen)
            chosen = selection.simplest_within(self.cv_option_total_, self.cv_option_m2_, n_items, self.cv_votes_,
                                               left)

    def _fit(self, votes: Votes) -> None:
        J, K = votes.n_workers, votes.n_classes
        hint = self._hint(votes.workers)
        d, unit_of_item = _units(votes.item, votes.worker, votes.label, votes.n_items, J, K)
        chosen, P = self._select(votes, d, hint)
        chosen, left, fit, self.clusters_, pairs = self._fit_identifiable(d, chosen, hint, votes.n_items)
        self.candidate_, self.multistart_ = self.options_[chosen]
        # the online warm start's criterion (from_batch): scores by ALL_CANDIDATES that reproduce this choice
        self.cv_total_, self.cv_m2_ = selection.moments(_online_columns(P, self.options_, left, chosen))
        self.choice_ = _choice_name(self.candidate_, self.multistart_)
        self.pair_stats_ = pairs.as_array()
        self.confusion_, self.priors_ = fit.fitted.theta, fit.fitted.pi
        self.concentration_ = fit.fitted.concentration
        self.n_iter_ = fit.n_iter
        self.counts_, self.class_counts_ = fit.counts, fit.class_counts
        self.hard_share_, self.temper_ = fit.fitted.hard_share, fit.fitted.temper
        self.hard_counts_ = np.zeros_like(fit.counts) if fit.hard_counts is None else fit.hard_counts
        self.hard_class_counts_ = np.zeros(K) if fit.hard_class_counts is None else fit.hard_class_counts
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
        theta, pi = difficulty.latent(_bayes.Fitted(theta, self.priors_, self.concentration_, self.hard_share_,
                                                    self.temper_))
        code = np.append(self.clusters_.code, len(self.clusters_.rho))
        clusters = dependence.Clusters(code, np.append(self.clusters_.rho, 0.0))
        c = dependence.vote_weights(votes.item, votes.worker, clusters)
        lj = _em.log_joint(votes.item, votes.worker * K + votes.label, c, np.log(pi), np.log(theta), votes.n_items)
        return difficulty.classes(_em.softmax_rows(lj)[0], K)
