"""From a product's votes to its attribute decisions, and the statistics the learner needs from them.

Pure functions over the contracts and the online model; the stream calls them, tests call them directly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.events import AttributeDecision, LabelVote

__all__ = ["StatsAccumulator", "all_failed", "decide", "votes_by_attribute"]


def votes_by_attribute(votes: Iterable[LabelVote]) -> dict[str, dict[str, str | None]]:
    """``{attribute: {llm: label or None}}`` from a product's votes (later votes of one LLM win)."""
    out: dict[str, dict[str, str | None]] = defaultdict(dict)
    for v in votes:
        out[v.attribute][v.llm] = v.label
    return dict(out)


def all_failed(votes: Sequence[LabelVote]) -> bool:
    """True when no LLM gave any usable answer (every vote carries an error): the product must be retried."""
    return bool(votes) and all(v.error is not None for v in votes)


def decide(
    product_id: str, version: int, attribute: str, votes: Mapping[str, str | None], model: OnlineDawidSkene,
    *, reason: str = "complete", revision: int = 0, asked: Sequence[str] = (), llm_seconds: float = 0.0,
    started: float | None = None, stopped: str | None = None,
) -> tuple[AttributeDecision, np.ndarray]:
    """The decision for one attribute under ``model``, and the posterior (K,) over ``model.classes_``.

    With no usable vote the value is ``None`` (confidence 0) and the reason ``failed``: nobody answered.
    """
    post = model.posterior(votes)
    usable = any(lab is not None for lab in votes.values())
    if usable:
        k = int(np.argmax(post))
        value, confidence = model.classes_[k], float(post[k])
    else:
        value, confidence, reason = None, 0.0, "failed"
    decision = AttributeDecision(
        product_id=product_id, version=version, attribute=attribute, value=value, confidence=confidence,
        posterior={str(c): round(float(p), 6) for c, p in zip(model.classes_, post) if p >= 1e-4},
        votes=dict(votes), model_version=model.version, decided_at=time.time(), revision=revision,
        reason=reason, asked=list(asked or votes), llm_seconds=llm_seconds, stopped=stopped,
        processing_seconds=(time.perf_counter() - started) if started is not None else 0.0,
    )
    return decision, post


class StatsAccumulator:
    """Votes of decided items per attribute, taken as one mini-batch per flush.

    The stream sends the votes to the attribute's learner (:meth:`take_votes`), which learns them with
    ``partial_fit``; a caller that folds deltas itself takes their E-step with the model's ``batch_stats``.
    """

    def __init__(self, flush_items: int = 256):
        self.flush_items = flush_items
        self._pending: dict[str, tuple[list, list, list]] = {}
        self._n: dict[str, int] = defaultdict(int)

    def add(self, attribute: str, item: str, votes: Mapping[str, str | None]) -> bool:
        """Keep one decided item's votes; True when the attribute has enough items to flush now."""
        usable = [(w, lab) for w, lab in votes.items() if lab is not None]
        if not usable:
            return False
        items, workers, labels = self._pending.setdefault(attribute, ([], [], []))
        for w, lab in usable:
            items.append(item)
            workers.append(w)
            labels.append(lab)
        self._n[attribute] += 1
        return self._n[attribute] >= self.flush_items

    def take_votes(self, attribute: str) -> tuple[list, list, list] | None:
        """Remove one attribute's pending items and return their votes in long format (items, workers, labels)."""
        self._n.pop(attribute, None)
        return self._pending.pop(attribute, None)

    def attributes(self) -> list[str]:
        return list(self._pending)

    def __len__(self) -> int:
        return len(self._pending)


class RevisionWindow:
    """The most recent decisions per attribute, re-scored when the model changes (bounded memory).

    When a newer model flips the value of a recent item, the item gets a new decision with
    ``revision + 1`` (reason ``revision``): early decisions made by a young model are corrected as it
    learns. Only the last ``size`` items per attribute are kept; older decisions stand as they are.
    """

    def __init__(self, size: int = 2000):
        self.size = size
        self._items: dict[str, dict[tuple[str, int], AttributeDecision]] = defaultdict(dict)
        self._seen_version: dict[str, int] = {}

    def add(self, decision: AttributeDecision) -> None:
        if self.size <= 0 or decision.value is None:
            return
        window = self._items[decision.attribute]
        key = (decision.product_id, decision.version)
        window.pop(key, None)
        window[key] = decision
        while len(window) > self.size:
            window.pop(next(iter(window)))

    def latest(self, attribute: str, product_id: str, version: int) -> AttributeDecision | None:
        """The latest revision of a decision still in the window, else ``None``."""
        return self._items.get(attribute, {}).get((product_id, version))

    def drop_product(self, product_id: str) -> None:
        """Forget a product whose newer version superseded these decisions."""
        for window in self._items.values():
            for key in [k for k in window if k[0] == product_id]:
                del window[key]

    def revise(self, attribute: str, model: OnlineDawidSkene) -> list[AttributeDecision]:
        """Re-score the window under ``model`` (vectorised); return the flipped items' new decisions."""
        window = self._items.get(attribute)
        if not window or self._seen_version.get(attribute) == model.version:
            return []
        self._seen_version[attribute] = model.version
        keys, items, workers, labels = list(window), [], [], []
        for n, key in enumerate(keys):
            for llm, lab in window[key].votes.items():
                if lab is not None:
                    items.append(n)
                    workers.append(llm)
                    labels.append(lab)
        if not items:
            return []
        item_ids, proba = model.predict_proba_batch(items, workers, labels)
        best = proba.argmax(axis=1)
        out = []
        for row, n in enumerate(item_ids.tolist()):
            old = window[keys[n]]
            value = model.classes_[int(best[row])]
            if value == old.value:
                continue
            post = proba[row]
            new = old.model_copy(update={
                "value": value, "confidence": float(post[best[row]]), "model_version": model.version,
                "posterior": {str(c): round(float(p), 6) for c, p in zip(model.classes_, post) if p >= 1e-4},
                "revision": old.revision + 1, "reason": "revision", "decided_at": time.time(),
            })
            window[keys[n]] = new
            out.append(new)
        return out

    def attributes(self) -> list[str]:
        return list(self._items)

    def size_items(self) -> int:
        """Decisions held over every attribute (at most ``size`` per attribute)."""
        return sum(len(w) for w in self._items.values())
