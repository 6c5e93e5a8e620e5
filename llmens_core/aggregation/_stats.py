"""Mergeable, serialisable sufficient statistics of the online Dawid-Skene model (the ``ds-stats`` records).

Besides the E-step counts, a delta carries what the model choice needs, so the learner that folds deltas in
makes the same choice the batch model makes, without seeing a vote:

- ``scores`` (C,): the held-out vote log-likelihood of every candidate on the delta's items, computed with the
  parameters *before* those items were learnt (prequential: each item is unseen data for the model), and
  ``score_m2`` (C, C) the sums of products of per-item scores (their paired standard errors);
- ``pairs`` (2, J, J): agreements of worker pairs and their co-voted units
  (:class:`~llmens_core.aggregation.dependence.PairStats`);
- ``hard_confusion`` (J, K, K) and ``hard_class_counts`` (K,): the part of the counts that falls on hard items
  (:mod:`~llmens_core.aggregation.difficulty`), from which the ``+difficulty`` candidates are fitted.

A record without them (gold feedback) adds nothing to the criterion or to the hard part. Format 2 records (an
older candidate list) are read without their criterion.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import orjson

from llmens_core.aggregation._bayes import CANDIDATE_NAMES

__all__ = ["SufficientStats", "clamped_stats"]

_FORMAT = 3
C = len(CANDIDATE_NAMES)


class SufficientStats:
    """Additive statistics keyed by worker and class *names*, so statistics of different models merge.

    Attributes:
        workers (J names), classes (K names); confusion (J, K, K) soft counts ``[worker, true, given]``;
        class_counts (K,); n_items (items with a vote); scores (C,), score_m2 (C, C), n_votes (votes scored)
        for the candidates of :data:`~._bayes.CANDIDATE_NAMES`; pairs (2, J, J); hard_confusion (J, K, K) and
        hard_class_counts (K,), the hard items' part of confusion and class_counts.
    """

    __slots__ = ("workers", "classes", "confusion", "class_counts", "n_items", "scores", "score_m2",
                 "n_votes", "pairs", "hard_confusion", "hard_class_counts")

    def __init__(self, workers=(), classes=(), confusion=None, class_counts=None, n_items: float = 0.0,
                 scores=None, score_m2=None, n_votes: float = 0.0, pairs=None, hard_confusion=None,
                 hard_class_counts=None):
        self.workers = list(workers)
        self.classes = list(classes)
        J, K = len(self.workers), len(self.classes)
        self.confusion = np.zeros((J, K, K)) if confusion is None else np.asarray(confusion, float).reshape(J, K, K)
        self.class_counts = np.zeros(K) if class_counts is None else np.asarray(class_counts, float).reshape(K)
        self.n_items = float(n_items)
        self.scores = np.zeros(C) if scores is None else np.asarray(scores, float).reshape(C)
        self.score_m2 = np.zeros((C, C)) if score_m2 is None else np.asarray(score_m2, float).reshape(C, C)
        self.n_votes = float(n_votes)
        self.pairs = np.zeros((2, J, J)) if pairs is None else np.asarray(pairs, float).reshape(2, J, J)
        self.hard_confusion = (np.zeros((J, K, K)) if hard_confusion is None
                               else np.asarray(hard_confusion, float).reshape(J, K, K))
        self.hard_class_counts = (np.zeros(K) if hard_class_counts is None
                                  else np.asarray(hard_class_counts, float).reshape(K))

    def aligned(self, workers: Sequence[Hashable], classes: Sequence[Hashable]) -> SufficientStats:
        """The same statistics laid out on ``workers`` x ``classes`` (supersets of this one's names)."""
        wi = {w: j for j, w in enumerate(workers)}
        ci = {c: k for k, c in enumerate(classes)}
        missing = [w for w in self.workers if w not in wi] + [c for c in self.classes if c not in ci]
        if missing:
            raise ValueError(f"names missing from the target layout: {missing[:10]}")
        out = SufficientStats(workers, classes, n_items=self.n_items, scores=self.scores,
                              score_m2=self.score_m2, n_votes=self.n_votes)
        kc = np.array([ci[c] for c in self.classes], dtype=np.int64)
        if self.classes:
            out.class_counts[kc] = self.class_counts
            out.hard_class_counts[kc] = self.hard_class_counts
        if self.workers:
            jw = np.array([wi[w] for w in self.workers])
            if self.classes:
                out.confusion[np.ix_(jw, kc, kc)] = self.confusion
                out.hard_confusion[np.ix_(jw, kc, kc)] = self.hard_confusion
            out.pairs[np.ix_([0, 1], jw, jw)] = self.pairs
        return out

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Sum of two statistics over the union of their workers and classes (a new object)."""
        workers = list(self.workers) + [w for w in other.workers if w not in set(self.workers)]
        classes = list(self.classes) + [c for c in other.classes if c not in set(self.classes)]
        a, b = self.aligned(workers, classes), other.aligned(workers, classes)
        return SufficientStats(workers, classes, a.confusion + b.confusion, a.class_counts + b.class_counts,
                               a.n_items + b.n_items, a.scores + b.scores, a.score_m2 + b.score_m2,
                               a.n_votes + b.n_votes, a.pairs + b.pairs, a.hard_confusion + b.hard_confusion,
                               a.hard_class_counts + b.hard_class_counts)

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return self.merge(other)

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "workers": self.workers, "classes": self.classes,
                "confusion": self.confusion.ravel().tolist(), "class_counts": self.class_counts.tolist(),
                "n_items": self.n_items, "scores": self.scores.tolist(), "score_m2": self.score_m2.ravel().tolist(),
                "n_votes": self.n_votes, "pairs": self.pairs.ravel().tolist(),
                "hard_confusion": self.hard_confusion.ravel().tolist(),
                "hard_class_counts": self.hard_class_counts.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> SufficientStats:
        """Also reads formats 1 and 2, without their criterion (their candidate list is not this one)."""
        current = d.get("format") == _FORMAT
        return cls(d["workers"], d["classes"], d["confusion"], d["class_counts"], d["n_items"],
                   d.get("scores") if current else None, d.get("score_m2") if current else None,
                   d.get("n_votes", 0.0) if current else 0.0, d.get("pairs"), d.get("hard_confusion"),
                   d.get("hard_class_counts"))

    def to_bytes(self) -> bytes:
        """orjson encoding; floats round-trip exactly. Names must be JSON scalars (str/int)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview | str) -> SufficientStats:
        return cls.from_dict(orjson.loads(b))

    def __repr__(self) -> str:
        return f"SufficientStats(workers={len(self.workers)}, classes={self.classes}, n_items={self.n_items:g})"


def clamped_stats(
    items: Iterable[tuple[Mapping[Hashable, Hashable | None], Hashable]], classes: Sequence[Hashable] = ()
) -> SufficientStats:
    """E-step statistics of items whose true class is known (gold feedback), as one mergeable delta.

    ``items``: ``(votes, gold)`` pairs, ``votes`` worker -> label (``None`` abstains). Each item's posterior is
    clamped to the one-hot vector of ``gold``, so a worker's vote adds a whole count to ``confusion[worker,
    gold, vote]`` and the item adds one to ``class_counts[gold]``. Items without a usable vote are left out.
    ``classes`` fixes the layout's first classes (e.g. the model's); labels and gold classes met are appended.
    Gold says nothing about the held-out vote criterion: its fields stay zero.
    """
    cls = list(classes)
    cid = {c: k for k, c in enumerate(cls)}
    wid: dict = {}
    rows: list[tuple[int, int, int]] = []
    gold_idx: list[int] = []
    for votes, gold in items:
        if gold is None:
            raise ValueError("a gold label must be a class, not None")
        pairs = [(w, lab) for w, lab in votes.items() if lab is not None]
        if not pairs:
            continue
        for c in (gold, *(lab for _, lab in pairs)):
            cid.setdefault(c, len(cid))
        gold_idx.append(cid[gold])
        rows += [(wid.setdefault(w, len(wid)), cid[gold], cid[lab]) for w, lab in pairs]
    cls = list(cid)
    K = len(cls)
    conf = np.zeros((len(wid), K, K))
    if rows:
        np.add.at(conf, tuple(np.asarray(rows).T), 1.0)
    class_counts = np.bincount(np.asarray(gold_idx, dtype=np.int64), minlength=K).astype(float)
    return SufficientStats(list(wid), cls, conf, class_counts, float(len(gold_idx)))
