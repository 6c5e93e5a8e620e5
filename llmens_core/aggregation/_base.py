"""The crowd-kit-like estimator interface every aggregator shares."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from llmens_core.aggregation._votes import Votes, _as_1d, abstain_mask, encode_votes, factorize, index_of


class NotFittedError(RuntimeError):
    """``predict``/``predict_proba`` was called before ``fit``."""


class Aggregator:
    """Base class. Subclasses implement ``_fit(votes)`` and ``_proba(votes) -> (I, K)``.

    After ``fit(items, workers, labels)`` the estimator exposes ``items_`` (I,), ``workers_`` (J,), ``classes_`` (K,).
    ``predict_proba()`` returns shape (I, K) aligned with ``items_`` and ``classes_``; ``predict()`` returns the
    argmax class per item (shape (I,), object array of class ids; ties go to the first class in ``classes_``).
    Items whose votes all abstain get the class prior (uniform for vote-counting methods).

    Both also accept new votes, ``predict(items, workers, labels)``: then rows follow the sorted unique new
    items, workers never seen in ``fit`` use the prior, and labels outside ``classes_`` are ignored.
    """

    classes: Sequence[Hashable] | None = None

    def fit(self, items, workers, labels):
        votes = encode_votes(items, workers, labels, classes=self.classes)
        self.items_ = votes.items
        self.workers_ = votes.workers
        self.classes_ = votes.classes
        self._fit(votes)
        self._fitted_proba = self._proba(votes)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")

    def _encode_new(self, items, workers, labels) -> Votes:
        it = _as_1d(items, "items")
        wk = _as_1d(workers, "workers")
        lb = _as_1d(labels, "labels")
        if not (len(it) == len(wk) == len(lb)):
            raise ValueError("items, workers and labels must have the same length")
        items_, icode = factorize(it)
        wcode = index_of(self.workers_, wk)
        lcode = np.full(len(lb), -1, dtype=np.int64)
        keep = ~abstain_mask(lb)
        lcode[keep] = index_of(self.classes_, lb[keep])
        ok = lcode >= 0
        # unknown workers get code J (the prior); subclasses handle it
        wcode = np.where(wcode < 0, len(self.workers_), wcode)
        return Votes(icode[ok], wcode[ok], lcode[ok], items_, self.workers_, self.classes_)

    def predict_proba(self, items=None, workers=None, labels=None) -> np.ndarray:
        """Posterior over ``classes_`` per item, shape (I, K); rows sum to 1."""
        self._check_fitted()
        if items is None:
            return self._fitted_proba.copy()
        return self._proba(self._encode_new(items, workers, labels))

    def predict(self, items=None, workers=None, labels=None) -> np.ndarray:
        """Most probable class per item, shape (I,)."""
        p = self.predict_proba(items, workers, labels)
        return self.classes_[np.argmax(p, axis=1)] if p.shape[0] else np.empty(0, dtype=object)

    def fit_predict(self, items, workers, labels) -> np.ndarray:
        return self.fit(items, workers, labels).predict()

    def fit_predict_proba(self, items, workers, labels) -> np.ndarray:
        return self.fit(items, workers, labels).predict_proba()

    # subclass hooks
    def _fit(self, votes: Votes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _proba(self, votes: Votes) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def weighted_scores(votes: Votes, weights: np.ndarray) -> np.ndarray:
    """Sum of worker weights per (item, class), shape (I, K); ``weights`` shape (J+1,) (last = unknown worker)."""
    n_i, K = votes.n_items, votes.n_classes
    w = weights[votes.worker]
    return np.bincount(votes.item * K + votes.label, weights=w, minlength=n_i * K).reshape(n_i, K)


__all__ = ["Aggregator", "NotFittedError", "weighted_scores", "abstain_mask"]
