"""Majority vote and weighted majority vote (given weights)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation._base import Aggregator, weighted_scores
from llmens_core.aggregation._votes import Votes

__all__ = ["MajorityVote", "WeightedMajorityVote"]


def _scores_to_proba(scores: np.ndarray) -> np.ndarray:
    """Vote shares per item, shape (I, K); items without votes (or with non-positive totals) are uniform."""
    s = np.maximum(scores, 0.0)
    tot = s.sum(axis=1, keepdims=True)
    K = s.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(tot > 0, s / np.where(tot > 0, tot, 1.0), 1.0 / K)
    return p


class MajorityVote(Aggregator):
    """Plain majority vote: the project's one majority vote (the demo, the benches, ``llmens evaluate`` and
    :func:`llmens_core.scoring.majority` all use it). ``predict_proba`` is the share of votes per class, shape (I, K).

    **Tie rule**: a tie goes to the first of the tied labels in ``classes_`` order, which is sorted order (numbers
    before strings when both occur) unless ``classes`` fixes it. It is deterministic, and so it depends on the labels'
    names; :func:`~llmens_core.aggregation.evaluate.majority_tie_split` scores the same votes with ties split evenly,
    the expected accuracy of random tie-breaks, which no naming changes.

    ``skills_`` (J,) is each worker's agreement with the majority label (for inspection).
    """

    def __init__(self, classes: Sequence[Hashable] | None = None):
        self.classes = classes

    def _weights(self, votes: Votes) -> np.ndarray:
        return np.ones(votes.n_workers + 1)

    def _fit(self, votes: Votes) -> None:
        self.weights_ = self._weights(votes)[:-1]
        p = self._proba(votes)
        if len(votes.item):
            mv = np.argmax(p, axis=1)
            agree = np.bincount(
                votes.worker, weights=(votes.label == mv[votes.item]), minlength=votes.n_workers
            )
            n = np.bincount(votes.worker, minlength=votes.n_workers)
            self.skills_ = np.where(n > 0, agree / np.maximum(n, 1), np.nan_to_num(0.0))
        else:
            self.skills_ = np.zeros(votes.n_workers)

    def _proba(self, votes: Votes) -> np.ndarray:
        w = (
            np.ones(len(self.workers_) + 1)
            if not hasattr(self, "weights_")
            else np.append(self.weights_, 1.0)
        )
        return _scores_to_proba(weighted_scores(votes, w))


class WeightedMajorityVote(MajorityVote):
    """Majority vote with given per-worker weights (workers missing from ``weights`` get ``default_weight``).

    ``predict_proba`` is the share of (non-negative) weighted votes per class, shape (I, K).
    """

    def __init__(
        self,
        weights: Mapping[Hashable, float] | None = None,
        *,
        default_weight: float = 1.0,
        classes: Sequence[Hashable] | None = None,
    ):
        self.weights = dict(weights or {})
        self.default_weight = float(default_weight)
        self.classes = classes

    def _weights(self, votes: Votes) -> np.ndarray:
        w = [float(self.weights.get(x, self.default_weight)) for x in votes.workers.tolist()]
        return np.asarray(w + [self.default_weight])

    def _proba(self, votes: Votes) -> np.ndarray:
        return _scores_to_proba(weighted_scores(votes, np.append(self.weights_, self.default_weight)))
