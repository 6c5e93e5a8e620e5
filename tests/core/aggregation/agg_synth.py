"""Synthetic vote generators shared by the aggregation tests (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / ".." / "shared" / "data"


def make_confusions(rng, n_workers, n_classes, acc_lo=0.6, acc_hi=0.9):
    K = n_classes
    conf = np.empty((n_workers, K, K))
    for j in range(n_workers):
        for k in range(K):
            acc = rng.uniform(acc_lo, acc_hi)
            off = rng.dirichlet(np.ones(K - 1)) * (1 - acc) if K > 1 else np.zeros(0)
            conf[j, k] = np.insert(off, k, acc)
    return conf


def sample_votes(rng, conf, n_items, pi=None, p_vote=1.0):
    """Long-format votes from confusion matrices (J, K, K); returns (items, workers, labels, truth)."""
    J, K, _ = conf.shape
    pi = np.full(K, 1.0 / K) if pi is None else pi
    z = rng.choice(K, size=n_items, p=pi)
    items, workers, labels = [], [], []
    for j in range(J):
        mask = rng.random(n_items) < p_vote
        idx = np.flatnonzero(mask)
        cum = np.cumsum(conf[j][z[idx]], axis=1)
        lab = np.minimum((rng.random(len(idx))[:, None] > cum).sum(axis=1), K - 1)
        items.append(idx)
        workers.append(np.full(len(idx), j))
        labels.append(lab)
    return np.concatenate(items), np.concatenate(workers), np.concatenate(labels), z


@pytest.fixture(name="rng")
def _rng():
    return np.random.default_rng(12345)
