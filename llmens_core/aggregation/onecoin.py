"""One-coin Dawid-Skene as iterative weighted majority voting (IWMV; Li & Yu 2014), the LLM-Ensemble method."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from llmens_core.aggregation._base import Aggregator, weighted_scores
from llmens_core.aggregation._votes import Votes

__all__ = ["OneCoinDawidSkene"]


class OneCoinDawidSkene(Aggregator):
    """IWMV: equal weights, label by weighted vote, estimate each worker's accuracy ``p_j`` against those labels,
    reweight, repeat until the labels stop changing (or ``n_iter``).

    Args:
        weighting: ``"log_odds"`` (``v_j = log((K-1) p_j / (1 - p_j))``, the Bayes weight of the one-coin model)
            or ``"linear"`` (``v_j = K p_j - 1``, Li & Yu's IWMV weight).
        prior_accuracy, prior_strength: Beta pseudo-counts that keep ``p_j`` away from 0 and 1 for workers with
            few votes (``p_j = (agree + s a) / (n + s)``).
    Learned: ``skills_`` (J,) = p_j, ``weights_`` (J,) = v_j, ``n_iter_``.
    ``predict_proba`` (I, K) is the one-coin posterior ``softmax(sum_j v_j [l_j = k])`` for log-odds weights, the
    share of positive weighted votes for linear weights.
    """

    def __init__(
        self,
        *,
        weighting: str = "log_odds",
        n_iter: int = 50,
        prior_accuracy: float = 0.7,
        prior_strength: float = 2.0,
        classes: Sequence[Hashable] | None = None,
    ):
        if weighting not in ("log_odds", "linear"):
            raise ValueError("weighting must be 'log_odds' or 'linear'")
        self.weighting = weighting
        self.n_iter = n_iter
        self.prior_accuracy = prior_accuracy
        self.prior_strength = prior_strength
        self.classes = classes

    def _weight_of(self, p: np.ndarray, K: int) -> np.ndarray:
        if K < 2:
            return np.ones_like(p)
        if self.weighting == "linear":
            return K * p - 1.0
        return np.log((K - 1) * p / (1.0 - p))

    def _prior_weight(self, K: int) -> float:
        return float(self._weight_of(np.array([self.prior_accuracy]), K)[0])

    def _fit(self, votes: Votes) -> None:
        J, K = votes.n_workers, votes.n_classes
        n = np.bincount(votes.worker, minlength=J).astype(float)
        s, a = self.prior_strength, self.prior_accuracy
        w = np.ones(J + 1)
        labels = None
        self.n_iter_ = 0
        for it in range(max(1, self.n_iter)):
            scores = weighted_scores(votes, w)
            new = np.argmax(scores, axis=1)
            self.n_iter_ = it + 1
            agree = np.bincount(votes.worker, weights=(votes.label == new[votes.item]), minlength=J)
            p = np.clip((agree + s * a) / (n + s) if s > 0 else agree / np.maximum(n, 1), 1e-6, 1 - 1e-6)
            w = np.append(self._weight_of(p, K), self._prior_weight(K))
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
        self.skills_ = p
        self.weights_ = w[:-1]

    def _proba(self, votes: Votes) -> np.ndarray:
        K = votes.n_classes
        w = np.append(self.weights_, self._prior_weight(K))
        scores = weighted_scores(votes, w)
        if self.weighting == "log_odds":
            m = scores.max(axis=1, keepdims=True)
            e = np.exp(scores - m)
            return e / e.sum(axis=1, keepdims=True)
        sc = np.maximum(scores, 0.0)
        tot = sc.sum(axis=1, keepdims=True)
        return np.where(tot > 0, sc / np.where(tot > 0, tot, 1.0), 1.0 / K)
