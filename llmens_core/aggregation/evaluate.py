"""Score aggregation methods on ``item,worker,label`` answers against ``item,label`` truth (stdlib csv only)."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["read_answers", "read_truth", "evaluate", "run_online", "ALL_METHODS", "majority_tie_split",
           "sign_test"]

ALL_METHODS = ("default", "mv", "wmv", "onecoin", "ds", "online")


def _read(path: str | Path, cols: Sequence[str]) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [h.strip() for h in header]
        try:
            idx = [header.index(c) for c in cols]
        except ValueError:
            raise ValueError(f"{path}: header must contain {', '.join(cols)}; got {header}") from None
        return [[row[i] for i in idx] for row in reader if row]


def read_answers(path: str | Path) -> tuple[list[str], list[str], list[str | None]]:
    """``(items, workers, labels)`` from a CSV with header ``item,worker,label``; an empty label abstains."""
    rows = _read(path, ("item", "worker", "label"))
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] if r[2] != "" else None for r in rows]


def read_truth(path: str | Path) -> dict[str, str]:
    """``{item: label}`` from a CSV with header ``item,label``."""
    return {r[0]: r[1] for r in _read(path, ("item", "label"))}


def run_online(items, workers, labels, *, passes: int = 1, seed: int = 0, batch_size: int = 256, **kw):
    """Shuffled mini-batch passes of the online default; returns ``(model, items (I,), proba (I, K))`` where every
    item is predicted with the model at the end of the last pass."""
    from llmens_core.aggregation import default_online

    it = np.asarray(items, dtype=object)
    wk = np.asarray(workers, dtype=object)
    lb = np.empty(len(labels), dtype=object)
    lb[:] = list(labels)
    uniq, inv = np.unique(it.astype(str), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    model = default_online(**kw)
    rng = np.random.default_rng(seed)
    for _ in range(max(1, passes)):
        perm = rng.permutation(len(uniq))
        for s in range(0, len(uniq), batch_size):
            sel = np.concatenate([order[bounds[i] : bounds[i + 1]] for i in perm[s : s + batch_size]])
            model.partial_fit(it[sel], wk[sel], lb[sel])
    items_, proba = model.predict_proba_batch(it, wk, lb)
    return model, items_, proba


def _score(pred_items, pred_labels, truth: dict) -> tuple[float, int]:
    ok = [str(p) == truth[str(i)] for i, p in zip(pred_items, pred_labels, strict=False) if str(i) in truth]
    return (float(np.mean(ok)) if ok else float("nan")), len(ok)


def majority_tie_split(mv, truth: dict) -> float:
    """Majority vote's expected accuracy when its ties are broken uniformly at random, on the items with truth;
    ``mv`` a fitted :class:`~.majority.MajorityVote`, whose vote shares decide the ties.

    A tied item counts ``1 / t`` when the truth is one of its ``t`` tied labels (an item whose every vote abstains
    ties all the labels). ``MajorityVote`` breaks ties by label order, so its score depends on how the labels
    happen to be named (on the shared data it wins 50 of 65 tied rte items, where chance is 32.5); this is the
    score no naming can change."""
    p = mv.predict_proba()
    tied = p == p.max(axis=1, keepdims=True)
    cidx = {str(c): k for k, c in enumerate(mv.classes_.tolist())}
    credit = [tied[r, cidx[truth[str(i)]]] / tied[r].sum() if truth[str(i)] in cidx else 0.0
              for r, i in enumerate(mv.items_.tolist()) if str(i) in truth]
    return float(np.mean(credit)) if credit else float("nan")


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value of a paired comparison (McNemar's exact test): ``wins`` items only the first
    method decides right, ``losses`` only the second. Under no difference, each discordant item is a fair coin."""
    from scipy.stats import binomtest

    n = int(wins) + int(losses)
    return 1.0 if n == 0 else float(binomtest(int(wins), n, 0.5).pvalue)


def evaluate(
    answers_csv: str | Path,
    truth_csv: str | Path,
    methods: Sequence[str] | None = None,
    passes: int = 1,
    seed: int = 0,
    batch_size: int = 256,
    families: str | None = "none",
) -> list[dict]:
    """Accuracy of each method on the items that have truth.

    Returns one dict per method, ``{"method", "accuracy", "items_scored", "seconds"}``, ``default`` first when
    ``methods`` is ``None``. ``families``: ``"prefix"`` gives ``default`` and ``online`` the name part before ``|`` as a
    family *hint* (dependence is still measured from the votes); ``"none"`` / ``"auto"``: no hint.
    ``seconds`` is fit (and predict) time, CSV reading excluded. The ``mv`` row also carries
    ``accuracy_ties_split`` (:func:`majority_tie_split`): majority vote breaks ties by label order, and the
    share of a dataset's ties its label names happen to win is no property of the method.
    """
    from llmens_core.aggregation import METHODS

    methods = list(ALL_METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    items, workers, labels = read_answers(answers_csv)
    truth = read_truth(truth_csv)
    fam = ({w: str(w).split("|", 1)[0] for w in workers if "|" in str(w)} if families == "prefix" else None)
    out = []
    for name in methods:
        t0 = time.perf_counter()
        if name == "online":
            model, items_, proba = run_online(
                items, workers, labels, passes=passes, seed=seed, batch_size=batch_size, families=fam
            )
            pred = [model.classes_[k] for k in np.argmax(proba, axis=1)]
            pred_items = items_.tolist()
        else:
            kw = {"families": fam} if name == "default" else {}
            model = METHODS[name](**kw)
            pred = model.fit_predict(items, workers, labels).tolist()
            pred_items = model.items_.tolist()
        secs = time.perf_counter() - t0
        acc, n = _score(pred_items, pred, truth)
        out.append({"method": name, "accuracy": acc, "items_scored": n, "seconds": secs})
        if name == "mv":
            out[-1]["accuracy_ties_split"] = majority_tie_split(model, truth)
    return out
