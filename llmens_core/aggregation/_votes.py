"""Encoding long-format votes ``(item, worker, label)`` as integer index arrays, and shared helpers.

Conventions used across the package (shapes in docstrings use these letters):

- ``V``: number of (non-abstaining) votes; ``I``: items; ``J``: workers; ``K``: classes; ``U``: units
  (items, or groups of items with identical vote patterns when EM compresses them).
- ``items_``, ``workers_``, ``classes_`` are 1-D object arrays of the original hashable ids, sorted when the
  ids are mutually comparable (otherwise by ``(type name, value)``), so results do not depend on input order.
- A label ``None`` (or a float NaN, as pandas writes missing values) is an abstention: the vote is dropped but
  the item and the worker are still known.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Votes", "encode_votes", "factorize", "resolve_families"]


def _as_1d(values: Iterable[Hashable], name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        arr = values
    else:
        values = list(values) if not isinstance(values, Sequence) else values
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        # Homogeneous str / int inputs are converted to native dtypes: sorting them is much faster.
        if len(arr):
            first = type(arr[0])
            if first is str and all(type(x) is str for x in arr):
                arr = np.asarray(values, dtype=str)
            elif first is int and all(type(x) is int for x in arr):
                with contextlib.suppress(OverflowError):
                    arr = np.asarray(values, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _sort_key(x: object) -> tuple[str, object]:
    return (type(x).__name__, x)


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(uniques, codes)``: sorted unique ids (object array, shape (n_unique,)) and int64 codes (shape (n,))."""
    if values.dtype.kind in "iu" and len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo <= 4 * len(values) + 1024:  # dense integer ids: counting sort
            present = np.bincount(values - lo, minlength=hi - lo + 1) > 0
            rank = np.cumsum(present) - 1
            uniq = np.flatnonzero(present) + lo
            out = np.empty(len(uniq), dtype=object)
            out[:] = uniq.tolist()
            return out, rank[values - lo].astype(np.int64, copy=False)
    if values.dtype != object:
        uniq, codes = np.unique(values, return_inverse=True)
        out = np.empty(len(uniq), dtype=object)
        out[:] = uniq.tolist()
        return out, codes.astype(np.int64, copy=False).reshape(-1)
    try:
        uniq, codes = np.unique(values, return_inverse=True)
        out = np.empty(len(uniq), dtype=object)
        out[:] = list(uniq)
        return out, codes.astype(np.int64, copy=False).reshape(-1)
    except TypeError:  # mixed, mutually incomparable ids (e.g. str and int)
        seen = sorted(set(values.tolist()), key=_sort_key)
        index = {v: k for k, v in enumerate(seen)}
        out = np.empty(len(seen), dtype=object)
        out[:] = seen
        return out, np.fromiter((index[v] for v in values.tolist()), dtype=np.int64, count=len(values))


def abstain_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask, shape (n,): True where the label is ``None`` or NaN (an abstention)."""
    if labels.dtype == object:
        with np.errstate(invalid="ignore"):
            return np.asarray(labels == None, dtype=bool) | np.asarray(labels != labels, dtype=bool)  # noqa: E711
    if labels.dtype.kind == "f":
        return np.isnan(labels)
    return np.zeros(len(labels), dtype=bool)


def index_of(uniques: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Codes of ``values`` in ``uniques`` (shape (n,)); -1 where a value is not in ``uniques``."""
    lookup = {v: k for k, v in enumerate(uniques.tolist())}
    return np.fromiter((lookup.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))


@dataclass
class Votes:
    """Votes as integer codes.

    Attributes:
        item, worker, label: int64 arrays, shape (V,), abstentions removed.
        items, workers, classes: object arrays of ids, shapes (I,), (J,), (K,).
    """

    item: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    items: np.ndarray
    workers: np.ndarray
    classes: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def encode_votes(items, workers, labels, classes: Sequence[Hashable] | None = None) -> Votes:
    """Encode long-format votes. ``classes`` fixes the label set and its order; a label outside it is an error.

    Raises ``ValueError`` on length mismatch, or when there are no classes at all (every vote abstains and
    ``classes`` is not given).
    """
    it = _as_1d(items, "items")
    wk = _as_1d(workers, "workers")
    lb = _as_1d(labels, "labels")
    if not (len(it) == len(wk) == len(lb)):
        raise ValueError(
            f"items, workers and labels must have the same length, got {len(it)}, {len(wk)}, {len(lb)}"
        )
    items_, item_codes = factorize(it)
    workers_, worker_codes = factorize(wk)
    keep = ~abstain_mask(lb)
    lb_kept = lb[keep]
    if classes is None:
        if not len(lb_kept):
            raise ValueError("no classes: every vote abstains and `classes` was not given")
        classes_, label_codes = factorize(lb_kept)
    else:
        classes_ = np.empty(len(classes), dtype=object)
        classes_[:] = list(classes)
        if len(set(classes_.tolist())) != len(classes_):
            raise ValueError("`classes` has duplicates")
        if not len(classes_):
            raise ValueError("`classes` is empty")
        label_codes = index_of(classes_, lb_kept)
        if (label_codes < 0).any():
            unknown = sorted({str(x) for x in lb_kept[label_codes < 0].tolist()})[:10]
            raise ValueError(f"labels not in `classes`: {unknown}")
    return Votes(item_codes[keep], worker_codes[keep], label_codes, items_, workers_, classes_)


def resolve_families(families, workers: np.ndarray) -> np.ndarray | None:
    """Family code per worker, shape (J,), or ``None`` when every worker is its own family.

    ``families`` is ``None``/``"none"`` or a mapping worker -> family (workers missing from it form their own
    family). Families are never derived from worker names (the default finds correlated workers from the votes,
    see :mod:`llmens_core.aggregation.dependence`).
    """
    if families is None or (isinstance(families, str) and families == "none"):
        return None
    if isinstance(families, str):
        raise ValueError(f"families must be a mapping or None, got {families!r} (name prefixes are not families)")
    fam_names: dict[Hashable, int] = {}
    codes = np.empty(len(workers), dtype=np.int64)
    for j, w in enumerate(workers.tolist()):
        codes[j] = fam_names.setdefault(families.get(w, ("__own__", w)), len(fam_names))
    return codes
