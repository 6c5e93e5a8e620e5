"""The revisit window: the last mini-batches' statistics, recomputed under the current parameters after every step.

Incremental EM (Neal & Hinton 1998) on a sliding window: what the window's batches put into ``S`` is replaced by
their statistics under the current model, each batch's weight in ``S`` tracked through the later steps (a cold
model's first batch, learnt from the batch race, too). One pass of plain online EM keeps the statistics its first
batches got from a young model, close to majority vote's; on a sparse crowd (web: 177 workers, six votes per item)
that left one pass 1.2-2.5 points below the batch fit (three shuffles); with a window of 16 batches of 256 items it
ends 0.0-0.4 below. The window is counted in batches so that its cost per new item is ``window`` E-steps whatever
the batch size: 16 keeps ``partial_fit`` at 30-36 us per item (20-26 without), and the agreement of one pass with
the batch decisions grows with it on every dataset of ``bench/aggregation.py``, so the budget of 50 us sets it. The
window is working memory, not state: it is not serialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmens_core.aggregation.posterior import grown, grown_counts

if TYPE_CHECKING:
    from llmens_core.aggregation.online import OnlineDawidSkene

__all__ = ["Visit", "revisit"]


@dataclass
class Visit:
    """A mini-batch in the revisit window: its votes as codes (V,), its weight per unit of statistics in ``S`` when
    it was learnt (``weight``, with the model's ``log_keep`` then), and what it put there: the posteriors behind it,
    class ``T`` (n_items, K) and hard part ``T_hard`` (n_items, K) or None (K of that time), or, for the batch race's
    first batch until its first revisit, the ``counts`` themselves (confusion, class, hard confusion, hard class)."""

    icode: np.ndarray
    wcode: np.ndarray
    lcode: np.ndarray
    n_items: int
    weight: float
    log_keep: float
    T: np.ndarray | None
    T_hard: np.ndarray | None
    counts: tuple | None = None


def revisit(model: OnlineDawidSkene) -> None:
    """Recompute the statistics of ``model``'s window under its current parameters and replace what they put in
    ``S`` (counts are linear in the posteriors: one pass over the window's votes counts the weighted differences)."""
    window = list(model._window)
    J, K = len(model.workers_), len(model.classes_)
    start = np.cumsum([0] + [v.n_items for v in window])
    icode = np.concatenate([v.icode + s for v, s in zip(window, start, strict=False)])
    wcode = np.concatenate([v.wcode for v in window])
    lcode = np.concatenate([v.lcode for v in window])
    n = int(start[-1])
    Tm, Th = model._latent(icode, wcode, lcode, model._batch_posterior(icode, wcode, lcode, n), n)
    weights = [v.weight * math.exp(model._log_keep - v.log_keep) for v in window]
    w = np.repeat(weights, [v.n_items for v in window])[:, None]

    def then(v: Visit, T: np.ndarray | None) -> np.ndarray:
        return np.zeros((v.n_items, K)) if T is None else grown(T, K)

    d_T = w * (Tm - np.concatenate([then(v, v.T) for v in window]))
    d_hard = None  # binary labels race no difficulty: no hard part to move
    if Th is not None or any(v.T_hard is not None for v in window):
        d_hard = w * ((0.0 if Th is None else Th) - np.concatenate([then(v, v.T_hard) for v in window]))
    moved = model._counts_of(icode, wcode, lcode, d_T, d_hard)
    for v, wv in zip(window, weights, strict=True):
        if v.counts is not None:  # the race's batch: its counts leave S as they came
            moved = tuple(m - wv * grown_counts(a, J, K) for m, a in zip(moved, v.counts, strict=True))
            v.counts = None
    model.S, model.S_class = model.S + moved[0], model.S_class + moved[1]
    model.S_hard, model.S_hard_class = model.S_hard + moved[2], model.S_hard_class + moved[3]
    for v, a, b in zip(window, start[:-1], start[1:], strict=True):
        v.T, v.T_hard = Tm[a:b], None if Th is None else Th[a:b]
    model._refresh()
