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


def imbalanced_crowd(rng, n_items=3000, n_workers=120, votes_per_item=3, positive=0.12, zipf=1.6):
    """A sparse binary crowd with a rare positive class (duplicate detection, a yes/no attribute): workers of
    heavy-tailed activity (Zipf), each item answered by ``votes_per_item`` of them, sensitivity U(0.55, 0.95)
    below specificity U(0.85, 0.995). Returns ``(items, workers, labels, truth, log_joint)``, ``log_joint``
    (I, 2) the log-probability of each item's votes and class under the true parameters (its argmax is the
    Bayes oracle)."""
    activity = rng.zipf(zipf, n_workers).astype(float)
    keys = np.log(activity / activity.sum()) + rng.gumbel(size=(n_items, n_workers))
    who = np.argpartition(-keys, votes_per_item - 1, axis=1)[:, :votes_per_item]  # weighted, no repeats
    z = (rng.random(n_items) < positive).astype(int)
    sens, spec = rng.uniform(0.55, 0.95, n_workers), rng.uniform(0.85, 0.995, n_workers)
    items = np.repeat(np.arange(n_items), votes_per_item)
    workers = who.ravel()
    p_yes = np.where(z[items] == 1, sens[workers], 1.0 - spec[workers])
    labels = (rng.random(len(items)) < p_yes).astype(int)
    p_label = np.stack([np.where(labels == 1, 1.0 - spec[workers], spec[workers]),
                        np.where(labels == 1, sens[workers], 1.0 - sens[workers])], axis=1)
    log_joint = np.log([1.0 - positive, positive]) + np.add.reduceat(np.log(p_label), np.arange(0, len(items),
                                                                                             votes_per_item))
    return items, workers, labels, z, log_joint


def graded_crowd_with_hard_items(rng, n_items=600, n_workers=150, votes_per_item=6, hard=0.6,
                                 prior=(0.11, 0.2, 0.25, 0.18, 0.26), zipf=1.8):
    """A sparse crowd grading items on ``len(prior)`` ordered grades (relevance, an age group) where items differ
    in difficulty: on an easy item a worker's vote falls off from the true grade as ``exp(-s |grade - truth|)``
    with its own sharpness ``s`` ~ U(1.5, 4); on a hard item (share ``hard``) every vote does so with ``s = 0.5``.
    Workers have heavy-tailed activity (Zipf). Dawid-Skene has no place for difficulty. Returns ``(items,
    workers, labels, truth)``."""
    K = len(prior)
    activity = rng.zipf(zipf, n_workers).astype(float)
    keys = np.log(activity / activity.sum()) + rng.gumbel(size=(n_items, n_workers))
    who = np.argpartition(-keys, votes_per_item - 1, axis=1)[:, :votes_per_item]
    z = rng.choice(K, n_items, p=np.asarray(prior) / np.sum(prior))
    is_hard = rng.random(n_items) < hard
    sharpness = rng.uniform(1.5, 4.0, n_workers)
    items, workers = np.repeat(np.arange(n_items), votes_per_item), who.ravel()
    s = np.where(is_hard[items], 0.5, sharpness[workers])
    w = np.exp(-s[:, None] * np.abs(np.arange(K)[None, :] - z[items][:, None]))
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    labels = np.minimum((rng.random(len(items))[:, None] > cum).sum(axis=1), K - 1)
    return items, workers, labels, z


def simulated_panel_votes(attribute: str):
    """The built-in simulated panel's votes (5 LLMs, as the stream tests get them over HTTP) on the shipped demo
    products that ask ``attribute``: ``(items, workers, labels, gold)`` with gold by product id."""
    import orjson

    from llmens_core.llm.simulator import Simulator, load_sim_config
    from llmens_core.schema import AttributeSchema
    from llmens_core.scoring import demo_gold

    sim = Simulator(load_sim_config(None))
    classes = list(AttributeSchema.load()[attribute].classes)
    gold = {pid: label for (pid, a), label in demo_gold().items() if a == attribute}
    items, workers, labels = [], [], []
    for line in (REPO / "llmens_core" / "data" / "demo_products.jsonl").read_bytes().splitlines():
        p = orjson.loads(line)
        if p["product_id"] not in gold:
            continue
        for name, state in sim.models.items():
            items.append(p["product_id"])
            workers.append(name)
            labels.append(sim.confusion_answer(state, p["title"], attribute, classes))
    return np.array(items, dtype=object), np.array(workers, dtype=object), np.array(labels, dtype=object), gold
