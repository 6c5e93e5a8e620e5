"""A young model: the votes it keeps so that it can race again as they grow, and the race run aside.

Online EM cannot leave the basin it starts in, and a stream's first batch is small. So up to
:data:`YOUNG_ITEMS` items a model whose votes have a dense worker keeps every batch it learnt (as codes), and
each time they have grown by :data:`YOUNG_GROWTH` it starts again from the batch race on all of them: a stream of
small batches ends in the basin the batch race finds on its data, not in the one a 16-item first batch suggested.
When the stream goes quiet, a young model with items learnt since its last race races once more on all of them (a
*settling* race), so that a burst of products ends at the batch fit of its votes rather than at plain online steps
after the last growth race.
Gold learnt while young is kept too, with the number of batches before it, and learnt again in its place after
each race. The stream's learner runs the race aside (:class:`~.online.YoungRace`, in another process) and goes on
learning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["YOUNG_GROWTH", "YOUNG_ITEMS", "Youth", "object_array"]

YOUNG_ITEMS = 4096
"""Items up to which a young model with a dense worker races again as its data grows (bounds the race's cost)."""
YOUNG_GROWTH = 1.5
"""A young model races again once its items have grown by this factor since its last race. A cost, judged by agreement
with the batch fit (no gold): the races cost about ``YOUNG_GROWTH / (YOUNG_GROWTH - 1)`` (3) times one race on all
the items; doubling left 16-item batches of the shipped real-LLM gender votes in another basin than the batch fit's
(32 of 53 items raced), and 1.25 (5 times) agreed no better than 1.5 on any dataset of ``bench/aggregation.py``."""


def object_array(names: list) -> np.ndarray:
    """``names`` as a 1-d object array (tuples stay elements)."""
    out = np.empty(len(names), dtype=object)
    out[:] = names
    return out


@dataclass
class Youth:
    """A young model's batches since a cold start, as codes ``(icode, wcode, lcode, n_items)``; the items of its last
    race; the gold it learnt, as ``(batches before it, [(votes, gold), ...])``; and whether the copy test has yet to
    count its votes (a model read from its record counts them when first needed)."""

    batches: list[tuple]
    raced_items: int = 0
    gold: list[tuple[int, list]] = field(default_factory=list)
    uncounted: bool = False

    @property
    def n_items(self) -> int:
        return sum(b[3] for b in self.batches)

    def codes_due(self, batch: tuple = (), *, settling: bool = False) -> tuple | None:
        """The codes (icode, wcode, lcode, n_items) of every item learnt, and of ``batch``, when they are due a race:
        at least :data:`YOUNG_GROWTH` times the last race's items (``settling``: more items than it), at most
        :data:`YOUNG_ITEMS`, and a worker answered at least half of them. None otherwise."""
        batches = self.batches + ([batch] if batch else [])
        start = np.cumsum([0] + [b[3] for b in batches])
        total = int(start[-1])
        grown = total > self.raced_items if settling else YOUNG_GROWTH * self.raced_items <= total
        if not (grown and total <= YOUNG_ITEMS):
            return None
        ic = np.concatenate([b[0] + s for b, s in zip(batches, start, strict=False)])
        wc = np.concatenate([b[1] for b in batches])
        lc = np.concatenate([b[2] for b in batches])
        pairs = np.unique(wc * total + ic)
        if not (np.bincount(pairs // total) >= 0.5 * total).any():
            return None
        return ic, wc, lc, total
