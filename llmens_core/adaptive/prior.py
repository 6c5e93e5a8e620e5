"""A prior shared across attributes (issue 33): each member's reliability on the other attributes, as the prior of a
new or rare attribute's model, its strength fitted from the data (empirical Bayes).

A catalogue has a long tail of attributes with few products each; a cold model is a majority vote and the adaptive
policy asks everyone until it has learnt. But an LLM that is reliable on colour is likely reliable on material: for
each member, its accuracy on the attributes whose models have learnt at least ``min_items`` items (the model's
``skills_``, weighed by the items it answered there) gives a beta prior by the method of moments. The mean is the
weighted mean accuracy; the strength (pseudo-items) is ``m (1 - m) / between - 1`` where ``between`` is the variance
of the accuracies across attributes less what sampling alone explains: a member as reliable everywhere gets a strong
prior, one whose accuracy swings with the attribute (a text classifier) a weak one. The strength is capped at the
median items behind one attribute's estimate (a prior never says more than a typical attribute's own data) and a
member seen on fewer than two attributes gets none. :meth:`~llmens_core.aggregation.OnlineDawidSkene.set_worker_priors`
starts a cold model from it. Its candidate choice starts from the other attributes' held-out scores per item
(:func:`shared_criterion`, weighed by items): without them a cold model is scored on nothing and keeps the pooled
candidate, which reads no member's own accuracy, until its own data say otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from llmens_core.aggregation import OnlineDawidSkene

__all__ = ["MIN_ITEMS", "shared_criterion", "shared_priors"]

MIN_ITEMS = 30.0
"""Items an attribute's model must have learnt before its members' accuracies inform the shared prior."""


def _accuracies(models: Mapping[str, OnlineDawidSkene], exclude: Iterable[str], min_items: float) -> dict:
    """worker -> [(accuracy, items answered)] over the models with enough items."""
    skip = set(exclude)
    out: dict[Hashable, list[tuple[float, float]]] = {}
    for a, m in models.items():
        if a in skip or not m.classes_ or not m.workers_ or m.n_items_ < min_items:
            continue
        answered = m.stats().confusion.sum(axis=(1, 2))
        for w, acc, n in zip(m.workers_, m.skills_.tolist(), answered.tolist(), strict=True):
            if n >= 1.0:
                out.setdefault(w, []).append((acc, n))
    return out


def shared_priors(models: Mapping[str, OnlineDawidSkene], *, exclude: Iterable[str] = (),
                  min_items: float = MIN_ITEMS) -> dict[Hashable, tuple[float, float]]:
    """``{worker: (accuracy, strength)}`` fitted on ``models`` except ``exclude`` (see the module docstring); empty
    when no member was measured on two attributes."""
    out = {}
    for w, rows in _accuracies(models, exclude, min_items).items():
        if len(rows) < 2:
            continue
        acc, n = (np.asarray(x, float) for x in zip(*rows, strict=True))
        m = float(np.average(acc, weights=n))
        spread = float(np.average((acc - m) ** 2, weights=n))
        sampling = m * (1 - m) * float(np.mean(1.0 / n))
        between = max(spread - sampling, 1e-6)
        strength = min(max(m * (1 - m) / between - 1.0, 0.0), float(np.median(n)))
        if strength > 0.0:
            out[w] = (m, strength)
    return out


def shared_criterion(models: Mapping[str, OnlineDawidSkene], *, exclude: Iterable[str] = (),
                     min_items: float = MIN_ITEMS) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The candidates' held-out scores per item ``(score, score_m2, votes)`` averaged over ``models`` except
    ``exclude`` (weighed by items, those with at least ``min_items``); ``None`` when there is none."""
    skip = set(exclude)
    use = [m for a, m in models.items() if a not in skip and m.classes_ and m.n_items_ >= min_items]
    if not use:
        return None
    w = np.asarray([m.n_items_ for m in use], float)
    w /= w.sum()
    return (sum(x * m.score for x, m in zip(w, use, strict=True)),
            sum(x * m.score_m2 for x, m in zip(w, use, strict=True)),
            float(sum(x * m.score_votes for x, m in zip(w, use, strict=True))))
