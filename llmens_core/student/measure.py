"""A student's prequential record (predict, then learn) and the rule that lets it decide alone.

Every product the panel decided is first predicted by the student with the weights it had before learning that
product, and the record keeps (bucket, probability of its top label, agreed with the panel). Only the last
``window`` records per bucket count, so a student whose agreement falls (a new category, drift) loses its
licence as the new records replace the old.

**The rule** (:meth:`PrequentialRecord.threshold`): the student votes, and may decide alone, on a product of
bucket ``b`` when its top probability is at least the smallest ``tau`` of :data:`TAUS` such that, among the
window's records of ``b`` with probability >= ``tau``, there are at least ``min_scored`` and the one-sided 95 %
Wilson lower bound of their agreement with the panel is >= ``target``. No such ``tau``: the student abstains
(cold, or measured too weak). ``target`` is set by the caller from its own budget (the adaptive policy's
``max_gain``: a decision may differ from full fan-out's with at most that probability); gold is never read.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from llmens_core.student.text import BUCKETS

__all__ = ["TAUS", "PrequentialRecord", "wilson_lower"]

TAUS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
Z_ONE_SIDED_95 = 1.6448536269514722


def wilson_lower(successes: float, n: float, z: float = Z_ONE_SIDED_95) -> float:
    """Wilson score lower bound of a proportion (0 for no trials)."""
    if n <= 0:
        return 0.0
    p = successes / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(0.0, (centre - margin) / (1 + z2 / n))


class PrequentialRecord:
    """The last ``window`` (probability, agreed) pairs per bucket, and the threshold they license."""

    def __init__(self, *, window: int = 400, min_scored: int = 30, target: float = 0.97):
        if window < 1 or min_scored < 1:
            raise ValueError("window and min_scored must be >= 1")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {target}")
        self.window, self.min_scored, self.target = int(window), int(min_scored), float(target)
        self._rows: dict[str, deque] = {b: deque(maxlen=self.window) for b in BUCKETS}
        self.n_scored: dict[str, int] = dict.fromkeys(BUCKETS, 0)
        self._cache: dict[str, float | None] = {}

    def add(self, bucket: str, proba: float, agreed: bool) -> None:
        self._rows[bucket].append((float(proba), bool(agreed)))
        self.n_scored[bucket] += 1
        self._cache.pop(bucket, None)

    def extend(self, rows: Iterable[tuple[str, float, bool]]) -> None:
        for b, p, a in rows:
            self.add(b, p, a)

    def _arrays(self, bucket: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[bucket]
        if not rows:
            return np.zeros(0), np.zeros(0, bool)
        p, a = zip(*rows)
        return np.asarray(p, float), np.asarray(a, bool)

    def threshold(self, bucket: str) -> float | None:
        """The smallest licensed probability for ``bucket`` (see the module docstring), ``None``: abstain."""
        if bucket in self._cache:
            return self._cache[bucket]
        proba, agreed = self._arrays(bucket)
        out = None
        for tau in TAUS:
            sel = proba >= tau
            n = int(sel.sum())
            if n >= self.min_scored and wilson_lower(float(agreed[sel].sum()), n) >= self.target:
                out = tau
                break
        self._cache[bucket] = out
        return out

    def agreement(self, bucket: str | None = None) -> tuple[float, int]:
        """Windowed agreement with the panel (all buckets when ``None``) and the number of records behind it."""
        rows = [r for b in ([bucket] if bucket else BUCKETS) for r in self._rows[b]]
        if not rows:
            return float("nan"), 0
        return sum(a for _, a in rows) / len(rows), len(rows)

    def to_dict(self) -> dict:
        return {"window": self.window, "min_scored": self.min_scored, "target": self.target,
                "n_scored": self.n_scored, "rows": {b: [[p, int(a)] for p, a in r] for b, r in self._rows.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> PrequentialRecord:
        out = cls(window=d["window"], min_scored=d["min_scored"], target=d["target"])
        for b, rows in d["rows"].items():
            out._rows[b].extend((float(p), bool(a)) for p, a in rows)
        out.n_scored.update(d["n_scored"])
        return out
