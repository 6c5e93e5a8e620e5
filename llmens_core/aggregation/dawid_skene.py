"""Full-confusion Dawid-Skene, batch EM, with Dirichlet priors and family pooling for correlated workers."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation import _em
from llmens_core.aggregation._base import Aggregator
from llmens_core.aggregation._votes import Votes, resolve_families

__all__ = ["DawidSkene"]


def _weighted_vote_shares(unit: np.ndarray, label: np.ndarray, c: np.ndarray, U: int, K: int) -> np.ndarray:
    """Majority vote's start for EM: each unit's share of the votes (V,) weighted by ``c`` per class, (U, K)."""
    scores = np.zeros((U, K))
    for k in range(K):
        scores[:, k] = np.bincount(unit, weights=c * (label == k), minlength=U)
    tot = scores.sum(axis=1, keepdims=True)
    return np.where(tot > 0, scores / np.where(tot > 0, tot, 1.0), 1.0 / K)


class DawidSkene(Aggregator):
    """Dawid-Skene (1979): class prior ``priors_`` (K,), one confusion matrix per worker ``confusion_`` (J, K, K)
    indexed [worker, true class, given label]; EM from a majority-vote start until the relative change of the
    (penalised) log-likelihood is below ``tol`` or ``n_iter`` iterations.

    Args:
        prior_accuracy, prior_strength: Dirichlet pseudo-counts per confusion row: ``prior_strength`` in all,
            ``prior_accuracy`` of it on the diagonal, the rest spread evenly. ``prior_strength=0`` is textbook
            maximum likelihood (with a 1e-12 floor so no log(0)).
        class_prior_strength: pseudo-count added to every class in the class prior.
        families: ``None``/``"none"`` (independent workers) or a mapping worker -> family. Votes of one family on one item are pooled in the E-step
            (composite likelihood): each gets weight ``1 / (1 + family_rho (n - 1))`` where ``n`` is the number of
            that family's votes on the item. ``family_rho=1`` counts a family as one vote.
        classes: fix the label set and its order (labels outside it are an error in ``fit``).
        pooled_prior: how the confusion prior is centred. ``True``: empirical Bayes, every worker shrunk towards
            the population confusion matrix (``prior_strength`` pseudo-counts per row); ``"sparse"``: as ``True``
            plus ``sparse_strength * K / sqrt(1 + n_j)`` pseudo-counts per row towards the worker's own one-coin
            (symmetric) matrix, so workers with few answers ``n_j`` learn one accuracy rather than K(K-1) cells
            (see :func:`_em.sparse_onecoin_prior`); ``"onecoin"``: only the one-coin centre; ``False``: the fixed
            ``prior_accuracy`` prior.
        class_prior: ``"learned"`` (M-step estimate, smoothed by ``class_prior_strength``) or ``"uniform"``
            (fixed 1/K; the decision is then the likelihood argmax, as in weighted voting; this avoids the
            class-prior / confusion confounding that hurts EM when each item has few answers from sparse workers).

    Learned: ``confusion_`` (J, K, K), ``priors_`` (K,), ``skills_`` (J,) = expected accuracy
    ``sum_k priors_[k] confusion_[j, k, k]``, ``weights_`` (J,) = one-coin log-odds of ``skills_``,
    ``families_`` (J,) family code per worker, ``n_iter_``, ``log_likelihood_``.
    """

    def __init__(
        self,
        *,
        n_iter: int = 100,
        tol: float = 1e-7,
        prior_accuracy: float = 0.7,
        prior_strength: float = 2.0,
        class_prior_strength: float = 1.0,
        families: Mapping[Hashable, Hashable] | str | None = None,
        family_rho: float = 1.0,
        classes: Sequence[Hashable] | None = None,
        compress: bool = True,
        pooled_prior: bool | str = True,
        sparse_strength: float = 0.0,
        class_prior: str = "learned",
    ):
        if class_prior not in ("learned", "uniform"):
            raise ValueError(f"class_prior must be 'learned' or 'uniform', got {class_prior!r}")
        self.sparse_strength = sparse_strength
        self.class_prior = class_prior
        self.pooled_prior = pooled_prior
        self.n_iter = n_iter
        self.tol = tol
        self.prior_accuracy = prior_accuracy
        self.prior_strength = prior_strength
        self.class_prior_strength = class_prior_strength
        self.families = families
        self.family_rho = family_rho
        self.classes = classes
        self.compress = compress

    # ------------------------------------------------------------------ fit
    def _confusion_prior(self, N: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The Dirichlet pseudo-counts of every confusion row for this M-step, (J, K, K) or (K, K), per
        ``pooled_prior`` (the counts ``N`` (J, K, K) give the empirical-Bayes ones)."""
        if self.pooled_prior == "sparse":
            # hierarchical prior: sparse workers -> their own one-coin matrix, dense ones -> population matrix
            return _em.sparse_onecoin_prior(N, alpha, self.prior_accuracy, self.prior_strength, self.sparse_strength)
        if self.pooled_prior == "onecoin":
            # shrink each worker's full matrix towards its own one-coin (symmetric) matrix
            return _em.onecoin_prior(N, self.prior_accuracy, self.prior_strength)
        if self.pooled_prior:
            # empirical-Bayes prior: shrink each worker towards the population confusion matrix
            return self.prior_strength * _em.normalise_rows(N.sum(axis=0) + alpha)
        return alpha

    def _fit(self, votes: Votes) -> None:
        I, J, K = votes.n_items, votes.n_workers, votes.n_classes  # noqa: E741
        self.families_ = resolve_families(self.families, votes.workers)
        alpha = _em.prior_alpha(K, self.prior_accuracy, self.prior_strength)
        beta = float(self.class_prior_strength)

        packed = (
            _em.compress_patterns(votes.item, votes.worker, votes.label, I, J, K) if self.compress else None
        )
        if packed is not None:
            unit_of_item, mult, unit, worker, label = packed
            U = len(mult)
        else:
            unit_of_item, mult = np.arange(I), np.ones(I)
            unit, worker, label, U = votes.item, votes.worker, votes.label, I
        wl = worker * K + label
        c = _em.vote_weights(unit, worker, self.families_, self.family_rho, U)
        has_votes = np.bincount(unit, minlength=U) > 0
        m_eff = mult * has_votes  # units without votes carry no information

        T = _weighted_vote_shares(unit, label, c, U, K)  # the start (family-pooled when families are given)

        ll_old = -np.inf
        self.n_iter_ = 0
        for it in range(max(1, self.n_iter)):
            # M-step
            Tm = T * m_eff[:, None]
            N = _em.confusion_counts(unit, wl, Tm, J)
            a_it = self._confusion_prior(N, alpha)
            theta = _em.normalise_rows(N + a_it)
            pi = (
                np.full(K, 1.0 / K)
                if self.class_prior == "uniform"
                else _em.normalise_rows(Tm.sum(axis=0) + beta)
            )
            log_theta, log_pi = np.log(theta), np.log(pi)
            # E-step
            log_t = _em.log_joint(unit, wl, c, log_pi, log_theta, U)
            T, lse = _em.softmax_rows(log_t)
            ll = float(m_eff @ lse) + float((a_it * log_theta).sum()) + beta * float(log_pi.sum())
            self.n_iter_ = it + 1
            if abs(ll - ll_old) <= self.tol * max(1.0, abs(ll)):
                break
            ll_old = ll
        self.log_likelihood_ = ll
        self.confusion_ = theta
        self.priors_ = pi
        self.skills_ = np.einsum("k,jkk->j", pi, theta)
        Kc = max(K, 2)
        p = np.clip(self.skills_, 1e-9, 1 - 1e-9)
        self.weights_ = np.log((Kc - 1) * p / (1 - p))
        self._fitted_T = T[unit_of_item]
        Tm = T * m_eff[:, None]
        # final soft counts (the sufficient statistics of the fit; OnlineDawidSkene.from_batch warm-starts on them)
        self.counts_ = _em.confusion_counts(unit, wl, Tm, J)
        self.class_counts_ = Tm.sum(axis=0)
        self.n_items_with_votes_ = float(m_eff.sum())

    # ------------------------------------------------------------------ predict
    def _proba(self, votes: Votes) -> np.ndarray:
        if (
            votes.workers is self.workers_
            and hasattr(self, "_fitted_T")
            and not hasattr(self, "_fitted_proba")
        ):
            return self._fitted_T
        _J, K = len(self.workers_), len(self.classes_)
        prior_theta = _em.normalise_rows(
            _em.prior_alpha(K, self.prior_accuracy, max(self.prior_strength, 1.0))
        )
        log_theta = np.log(np.concatenate([self.confusion_, prior_theta[None]], axis=0))  # (J+1, K, K)
        fam = self.families_
        if fam is not None:
            fam = np.append(fam, fam.max() + 1 if len(fam) else 0)
        # unknown workers (code J) are all pooled as one family only if families are used; that is conservative
        c = _em.vote_weights(votes.item, votes.worker, fam, self.family_rho, votes.n_items)
        log_t = _em.log_joint(
            votes.item, votes.worker * K + votes.label, c, np.log(self.priors_), log_theta, votes.n_items
        )
        return _em.softmax_rows(log_t)[0]
