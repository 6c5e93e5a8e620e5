"""The online model's statistics and what they give: every candidate's parameters, the choice, a snapshot.

:class:`StatisticsModel` holds per-item averages of the E-step (soft confusion counts per worker ``S`` (J, K, K)
and class counts ``S_class`` (K,), their hard items' part ``S_hard``/``S_hard_class`` (:mod:`.difficulty`)), the
criterion's running sums (``score`` (C,), ``score_m2`` (C, C), ``score_votes``) and the pair agreement counts
``pairs`` (2, J, J). ``q`` is the sum of squared averaging weights, so ``n_eff = 1 / q`` items stand behind the
averages. :meth:`~StatisticsModel._refresh` derives everything else from them (nothing derived is stored): the
M-step of every candidate of :data:`~._bayes.ALL_CANDIDATES`, the choice among them by :func:`.selection.choose`
(the rule the batch default applies to its cross-validated scores), the correlated-worker clusters
(:mod:`.dependence`) and the log parameters the posterior uses. How the statistics are learnt is
:mod:`.online`'s job; how an item's posterior is computed from them is :mod:`.posterior`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation import _bayes, dependence, difficulty, selection
from llmens_core.aggregation._stats import SufficientStats
from llmens_core.aggregation.params import ModelParams, frozen

__all__ = ["DERIVED", "N_CANDIDATES", "StatisticsModel"]

N_CANDIDATES = len(_bayes.ALL_CANDIDATES)
DERIVED = ("_ready", "_counts", "_all_fitted", "candidate_", "_clusters", "_clusters_key", "confusion_", "priors_",
           "_log_theta", "_log_pi", "_cluster", "_rho", "_lt_rows", "_params", "_chosen_fit", "_splitter",
           "_latent_log_theta", "_latent_log_pi")
"""Attributes :meth:`StatisticsModel._refresh` derives from the statistics (a snapshot of the state keeps them)."""


def _jsonable(x):
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)


class StatisticsModel:
    """Statistics of a Dawid-Skene model, and every candidate's parameters and the choice derived from them.

    Args:
        classes: initial label set; families: optional hint worker -> family for the dependence clusters;
        candidates: the race (names or :class:`~._bayes.Candidate`).

    Attributes: ``version``, ``classes_``, ``workers_``, ``candidate_`` (the chosen one), ``confusion_`` (J, K, K),
    ``priors_`` (K,), ``skills_``/``weights_`` (J,), ``n_items_``. :meth:`params` returns a read-only
    :class:`~.params.ModelParams` snapshot.
    """

    def __init__(self, classes: Sequence[Hashable] | None = None, *,
                 families: Mapping[Hashable, Hashable] | str | None = None,
                 candidates: Sequence[_bayes.Candidate | str] = _bayes.ALL_CANDIDATES):
        if isinstance(families, str) and families not in ("none", "auto"):
            raise ValueError("families is a mapping worker -> family (a hint); name prefixes are not families")
        self.candidates = tuple(c if isinstance(c, _bayes.Candidate) else _bayes.Candidate.parse(c)
                                for c in candidates)
        self.families: dict = dict(families) if isinstance(families, Mapping) else {}
        self.version = 0
        self.q = 0.0  # sum of squared averaging weights; n_eff = 1/q
        self.n_items_ = 0.0
        self.workers_: list = []
        self.classes_: list = []
        self._widx: dict = {}
        self._cidx: dict = {}
        self.S = np.zeros((0, 0, 0))
        self.S_class = np.zeros(0)
        self.S_hard = np.zeros((0, 0, 0))  # the hard items' part of S and S_class (:mod:`.difficulty`)
        self.S_hard_class = np.zeros(0)
        self.score, self.score_m2 = np.zeros(N_CANDIDATES), np.zeros((N_CANDIDATES, N_CANDIDATES))
        self.score_votes = 0.0
        self.pairs = np.zeros((2, 0, 0))
        if classes:
            self.add_classes(classes)

    # ------------------------------------------------------------------ names
    def add_workers(self, names: Iterable[Hashable]) -> list:
        """Add workers (new LLMs start from the prior). Returns the names actually added."""
        new = [w for w in dict.fromkeys(names) if w not in self._widx]
        if new:
            K, J = len(self.classes_), len(self.workers_)
            for w in new:
                self._widx[w] = len(self.workers_)
                self.workers_.append(w)
            self.S = np.concatenate([self.S, np.zeros((len(new), K, K))], axis=0)
            self.S_hard = np.concatenate([self.S_hard, np.zeros((len(new), K, K))], axis=0)
            pairs = np.zeros((2, J + len(new), J + len(new)))
            pairs[:, :J, :J] = self.pairs
            self.pairs = pairs
            self._refresh()
        return new

    def add_classes(self, names: Iterable[Hashable]) -> list:
        """Add classes (every worker's confusion gets a prior row/column for them). Returns the names added."""
        new = [c for c in dict.fromkeys(names) if c not in self._cidx and c is not None]
        if new:
            J, K = len(self.workers_), len(self.classes_)
            for c in new:
                self._cidx[c] = len(self.classes_)
                self.classes_.append(c)
            S = np.zeros((J, K + len(new), K + len(new)))
            S[:, :K, :K] = self.S
            self.S = S
            S = np.zeros((J, K + len(new), K + len(new)))
            S[:, :K, :K] = self.S_hard
            self.S_hard = S
            self.S_class = np.concatenate([self.S_class, np.zeros(len(new))])
            self.S_hard_class = np.concatenate([self.S_hard_class, np.zeros(len(new))])
            self._refresh()
        return new

    def set_families(self, families: Mapping[Hashable, Hashable]) -> None:
        """Declare or change family hints (worker -> family)."""
        self.families.update(families)
        self._refresh()

    def _hint(self) -> np.ndarray | None:
        if not self.families:
            return None
        codes: dict = {}
        return np.asarray([codes.setdefault(self.families[w], len(codes)) if w in self.families else -1
                           for w in self.workers_], dtype=np.int64)

    # ------------------------------------------------------------------ parameters
    @property
    def n_eff(self) -> float:
        return 1.0 / self.q if self.q > 0 else 0.0

    def _refresh(self) -> None:
        """M-step of every candidate from S, the clusters from the pair statistics, and the choice."""
        J, K = len(self.workers_), len(self.classes_)
        self._ready = K > 0
        if K == 0:
            return
        n = self.n_eff
        counts, class_counts = n * self.S, n * self.S_class
        self._counts, self._all_fitted = (counts, class_counts, n * self.S_hard, n * self.S_hard_class), None
        allowed = tuple(c for c in self._raced() if not c.difficulty or difficulty.found(self._fitted[c]))
        while True:  # the criterion's choice among the candidates whose fit is identifiable
            self.candidate_ = c = selection.choose(n * self.score, n * self.score_m2, n, n * self.score_votes,
                                                   allowed)
            f = self._fitted[c] if c.difficulty else _bayes.m_step(counts, class_counts, c.structure,
                                                                    c.class_prior)
            rest = tuple(a for a in allowed if (a.structure, a.class_prior, a.difficulty)
                         != (c.structure, c.class_prior, c.difficulty))
            if not rest or _bayes.identifiable(f.theta, counts):
                break
            allowed = rest
        self._clusters = self._find_clusters(n, K)
        self._chosen_fit = f
        self._splitter = self._split_model(c) if any(a.difficulty for a in self._raced()) else None
        theta, pi = difficulty.latent(f)
        self._latent_log_theta, self._latent_log_pi = np.log(np.maximum(theta, 1e-300)), np.log(pi)
        self.confusion_, self.priors_ = f.theta, f.pi
        marginal = f.theta if f.hard_share <= 0 else (
            (1.0 - f.hard_share) * f.theta + f.hard_share * difficulty.temper(f.theta, f.temper))
        self._log_theta = np.log(np.maximum(marginal, 1e-300))
        self._log_pi = np.log(f.pi)
        clusters = self._clusters if self.candidate_.dependent else dependence.INDEPENDENT(J)
        self._cluster, self._rho = clusters.code, clusters.rho
        if getattr(self, "_prior_log_theta", np.zeros((0, 0))).shape != (K, K):
            self._prior_log_theta = np.log(_bayes.m_step(np.zeros((1, K, K)), np.zeros(K), "pooled").theta[0])
            self._prior_rows = np.ascontiguousarray(self._prior_log_theta.T)
        self._lt_rows = np.ascontiguousarray(self._log_theta.transpose(0, 2, 1))  # [worker, given] -> (K,)
        self._params = None

    def _split_model(self, chosen: _bayes.Candidate) -> _bayes.Fitted:
        """The fit with difficulty that shares the statistics' counts between easy and hard items
        (:func:`.difficulty.split`): the chosen candidate's own, or its structure's with difficulty; while that
        has found no hard items (cold statistics), the same rows at the batch EM's start
        (:data:`.difficulty.START_TEMPER`, :data:`.difficulty.START_HARD`), as a fixed point of ``t = 1`` would
        never leave it."""
        f = self._fitted.get(_bayes.Candidate(chosen.structure, chosen.class_prior, False, True))
        if f is None:
            f = self._difficulty_fit(_bayes.Candidate(chosen.structure, chosen.class_prior, False, True))
        if difficulty.found(f):
            return f
        return _bayes.Fitted(f.theta, f.pi, f.concentration, difficulty.START_HARD, difficulty.START_TEMPER)

    def _difficulty_fit(self, cand: _bayes.Candidate) -> _bayes.Fitted:
        counts, class_counts, hard, hard_class = self._counts
        N = np.concatenate([np.maximum(counts - hard, 0.0), hard], axis=1)
        cc = np.concatenate([np.maximum(class_counts - hard_class, 0.0), hard_class])
        return difficulty.m_step(N, cc, cand.structure, cand.class_prior)

    def _raced(self) -> tuple[_bayes.Candidate, ...]:
        """The candidates raced on the current label set (:func:`._bayes.candidates_for`)."""
        return _bayes.candidates_for(self.candidates, len(self.classes_))

    @property
    def _fitted(self) -> dict[_bayes.Candidate, _bayes.Fitted]:
        """Every raced candidate's parameters from the current counts, derived when the criterion needs them (the
        E-step needs only the chosen one's)."""
        if self._all_fitted is None:
            raced = self._raced()
            self._all_fitted = _bayes.m_step_all(*self._counts[:2], [c for c in raced if not c.difficulty])
            by_structure: dict[str, _bayes.Fitted] = {}
            for c in raced:
                if c.difficulty:  # the class prior changes pi only
                    if c.structure not in by_structure:
                        by_structure[c.structure] = self._difficulty_fit(c)
                    f = by_structure[c.structure]
                    pi = _bayes.class_prior(self._counts[1], c.class_prior)
                    self._all_fitted[c] = dataclasses.replace(f, pi=pi)
        return self._all_fitted

    def _find_clusters(self, n: float, K: int) -> dependence.Clusters:
        """Clusters from the pair counts, recomputed only when they changed (not during the scratch steps
        of ``partial_fit``, which do not change the counts' meaning)."""
        J = len(self.workers_)
        old = getattr(self, "_clusters", None)
        if old is not None and len(old.code) == J and getattr(self, "_hold_clusters", False):
            return old
        hint = self._hint()
        key = (hash(self.pairs.tobytes()), n, K, None if hint is None else hint.tobytes())
        if old is not None and len(old.code) == J and key == getattr(self, "_clusters_key", None):
            return old
        self._clusters_key = key
        if not J:
            return dependence.INDEPENDENT(0)
        return dependence.find_clusters(dependence.PairStats.from_array(n * self.pairs), K, hint)

    def params(self) -> ModelParams:
        """Read-only snapshot of the current parameters (cached until the model changes)."""
        if not self.classes_:
            raise ValueError("the model has no classes yet")
        if self._params is None:
            self._params = ModelParams(
                self.version, tuple(self.workers_), tuple(self.classes_), frozen(self._log_theta),
                frozen(self._log_pi), frozen(self._prior_log_theta),
                np.array(self._cluster, dtype=np.int64), frozen(self._rho), self.candidate_.name)
        elif self._params.version != self.version:
            self._params = None
            return self.params()
        return self._params

    @property
    def skills_(self) -> np.ndarray:
        return np.einsum("k,jkk->j", self.priors_, self.confusion_) if self.workers_ else np.zeros(0)

    @property
    def weights_(self) -> np.ndarray:
        K = max(len(self.classes_), 2)
        p = np.clip(self.skills_, 1e-9, 1 - 1e-9)
        return np.log((K - 1) * p / (1 - p))

    # ------------------------------------------------------------------ state
    def stats(self) -> SufficientStats:
        """Current averaged statistics scaled to counts (``n_eff`` times the averages)."""
        n = self.n_eff
        return SufficientStats(list(self.workers_), list(self.classes_), n * self.S, n * self.S_class, n,
                               n * self.score, n * self.score_m2, n * self.score_votes, n * self.pairs,
                               n * self.S_hard, n * self.S_hard_class)

    def summary(self) -> dict:
        """JSON-able snapshot of the model."""
        out = {"version": self.version, "classes": [_jsonable(c) for c in self.classes_],
               "workers": [_jsonable(w) for w in self.workers_],
               "families": {_jsonable(w): _jsonable(f) for w, f in self.families.items()},
               "n_items": self.n_items_, "n_eff": self.n_eff}
        if self.classes_:
            out["candidate"] = self.candidate_.name
            if self._chosen_fit.hard_share > 0.0:
                out["difficulty"] = {"hard_share": self._chosen_fit.hard_share, "temper": self._chosen_fit.temper}
            out["clusters"] = [[out["workers"][j] for j in g] for g in self._clusters.groups()]
            out["class_priors"] = dict(zip(out["classes"], self.priors_.tolist(), strict=False))
            out["accuracy"] = dict(zip(out["workers"], self.skills_.tolist(), strict=False))
            out["weight"] = dict(zip(out["workers"], self.weights_.tolist(), strict=False))
            out["confusion"] = {w: self.confusion_[j].tolist() for j, w in enumerate(out["workers"])}
        return out

