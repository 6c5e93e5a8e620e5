"""Correlated workers found from the votes: agreement beyond what the fitted confusions explain.

Dawid-Skene assumes workers err independently given the true class. Runs of one base model do not: they
agree on the same wrong answer. For every pair of workers that voted on the same units this module compares
the agreement observed with the agreement the fitted model predicts, ``sum_k q_k sum_l theta_a[k, l]
theta_b[k, l]``, where ``q`` is the unit's posterior computed *without* the pair's own two votes (so the pair
cannot explain itself). Residual dependence is then a one-sided binomial z-test per pair,
``z = (observed - expected) / sqrt(n p (1 - p))`` (``p`` the pair's mean predicted agreement), at a Bonferroni-corrected level 0.05 over the pairs tested
(a statistical convention, not a value chosen by accuracy). Workers joined by significant pairs form
clusters (connected components). A declared family (``EndpointConfig.family``) is only a hint: two members of
one family are joined when their excess agreement is positive, however weak the evidence.

Within a cluster the strength ``rho = sum (observed - expected) / sum (n - expected)`` is the share of the
disagreement the model expected that did not happen, pooled over the cluster's pairs (in [0, 1]). It serves
two purposes, in the spirit of the copy models of source dependence and of FlyingSquid's closed-form
correlation terms:

- posterior: a vote of a cluster with ``n`` voters on a unit counts ``1 / (1 + rho (n - 1))`` (the design
  effect of ``n`` votes with correlation ``rho``; ``rho = 1`` makes the cluster one vote);
- held-out vote likelihood: a cluster member's vote copies a mate with probability ``rho``, else follows its
  confusion matrix, so the selection criterion can weigh the dependent model against the independent one.

Shapes: ``V`` votes, ``P`` vote pairs, ``J`` workers, ``K`` classes, ``C`` clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from llmens_core.aggregation import _em

__all__ = ["Clusters", "PairStats", "find_clusters", "pair_stats", "vote_weights", "copy_terms", "INDEPENDENT"]

SIGNIFICANCE = 0.05
"""Family-wise level of the residual-dependence tests (Bonferroni over the pairs tested)."""


@dataclass(frozen=True)
class PairStats:
    """Sums over co-voted units, symmetric in the two workers: ``obs`` (J, J) agreements, ``n`` (J, J) units
    voted on by both, ``q`` (K, J, J) the pair-excluded posterior mass of each class on those units. The
    agreement the model predicts follows from ``q`` and the *current* confusions (:meth:`expected`), so the
    statistics stay valid while the confusions are still being learnt (the online model)."""

    obs: np.ndarray
    n: np.ndarray
    q: np.ndarray

    @classmethod
    def zeros(cls, J: int, K: int) -> PairStats:
        return cls(np.zeros((J, J)), np.zeros((J, J)), np.zeros((K, J, J)))

    def as_array(self) -> np.ndarray:
        """Shape (2 + K, J, J): obs, n, q."""
        return np.concatenate([self.obs[None], self.n[None], self.q])

    @classmethod
    def from_array(cls, a: np.ndarray) -> PairStats:
        return cls(a[0], a[1], a[2:])

    def expected(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted agreements (J, J) under confusions ``theta`` (J, K, K), and their binomial variance."""
        agree = np.einsum("akl,bkl->kab", theta, theta)  # (K, J, J): P(same label | class k)
        exp = (self.q * agree).sum(axis=0)
        p = np.divide(exp, self.n, out=np.zeros_like(exp), where=self.n > 0)
        return exp, exp * (1.0 - p)


@dataclass(frozen=True)
class Clusters:
    """``code`` (J,) cluster per worker (a singleton is its own cluster); ``rho`` (C,) dependence strength per
    cluster (0 for singletons)."""

    code: np.ndarray
    rho: np.ndarray

    @property
    def dependent(self) -> bool:
        return bool(len(self.rho)) and float(self.rho.max()) > 0.0

    def groups(self) -> list[list[int]]:
        """Worker indices of each cluster with more than one member."""
        out = [np.flatnonzero(self.code == g).tolist() for g in range(len(self.rho))]
        return [g for g in out if len(g) > 1]


def INDEPENDENT(J: int) -> Clusters:  # noqa: N802 - reads as a constant
    """Every worker its own cluster: textbook conditional independence."""
    return Clusters(np.arange(J), np.zeros(J))


def vote_pairs(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(a, b)`` (P,) of every pair of votes on the same unit, ``a`` before ``b``."""
    order = np.argsort(unit, kind="stable")
    u = unit[order]
    counts = np.bincount(u) if len(u) else np.zeros(0, dtype=np.int64)
    a_parts, b_parts = [], []
    for d in range(1, int(counts.max(initial=0))):
        same = u[:-d] == u[d:]
        a_parts.append(order[:-d][same])
        b_parts.append(order[d:][same])
    if not a_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(a_parts), np.concatenate(b_parts)


def pair_stats(
    unit: np.ndarray, worker: np.ndarray, label: np.ndarray, c: np.ndarray | None,
    theta: np.ndarray, pi: np.ndarray, n_units: int, mult: np.ndarray | None = None,
) -> PairStats:
    """Agreement statistics of every worker pair (see the module docstring); ``mult`` (U,) counts each unit
    that many times (compressed vote patterns)."""
    J, K, _ = theta.shape
    a, b = vote_pairs(unit)
    if not len(a):
        return PairStats.zeros(J, K)
    log_theta = np.log(np.maximum(theta, 1e-300))
    lj = _em.log_joint(unit, worker * K + label, c, np.log(pi), log_theta, n_units)
    wa, wb = worker[a], worker[b]
    ca = 1.0 if c is None else c[a][:, None]
    cb = 1.0 if c is None else c[b][:, None]
    q, _ = _em.softmax_rows(lj[unit[a]] - ca * log_theta[wa, :, label[a]] - cb * log_theta[wb, :, label[b]])
    m = np.ones(len(a)) if mult is None else mult[unit[a]]
    key = wa * J + wb

    def sym(x):
        s = np.bincount(key, weights=m * x, minlength=J * J).reshape(J, J)
        return s + s.T

    return PairStats(sym((label[a] == label[b]).astype(float)), sym(np.ones(len(a))),
                     np.stack([sym(q[:, k]) for k in range(K)]))


def _components(edges: np.ndarray) -> np.ndarray:
    """Connected components of a boolean adjacency (J, J): component code per node (J,), in order of the
    smallest member."""
    J = len(edges)
    code = np.full(J, -1)
    g = 0
    for start in range(J):
        if code[start] >= 0:
            continue
        stack = [start]
        code[start] = g
        while stack:
            j = stack.pop()
            for nb in np.flatnonzero(edges[j] & (code < 0)):
                code[nb] = g
                stack.append(nb)
        g += 1
    return code


def find_clusters(stats: PairStats, theta: np.ndarray, hint: np.ndarray | None = None) -> Clusters:
    """Clusters of dependent workers from :func:`pair_stats` and the confusions ``theta`` (J, K, K) (see the
    module docstring). ``hint`` (J,) declared family codes (``-1`` = none) lowers the bar for pairs of one
    family to positive excess agreement."""
    J = len(stats.n)
    exp, var = stats.expected(theta)
    excess = stats.obs - exp
    tested = (stats.n > 0) & (var > 0) & ~np.eye(J, dtype=bool)
    n_tests = max(1, int(tested.sum()) // 2)
    z_crit = NormalDist().inv_cdf(1.0 - SIGNIFICANCE / n_tests)
    z = np.divide(excess, np.sqrt(np.where(tested, var, 1.0)), out=np.zeros((J, J)), where=tested)
    edges = tested & (z > z_crit)
    if hint is not None:
        same = (hint[:, None] == hint[None, :]) & (hint[:, None] >= 0)
        edges |= tested & same & (excess > 0)
    code = _components(edges)
    C = int(code.max()) + 1 if J else 0
    rho = np.zeros(C)
    within = (code[:, None] == code[None, :]) & tested
    for g in np.unique(code[np.flatnonzero(within.any(axis=1))]):
        sel = within & (code[:, None] == g)
        den = float((stats.n - exp)[sel].sum())
        rho[g] = min(max(float(excess[sel].sum()) / den, 0.0), 1.0) if den > 0 else 0.0
    return Clusters(code, rho)


def _cluster_counts(unit: np.ndarray, worker: np.ndarray, label: np.ndarray | None, clusters: Clusters):
    """Per vote: how many votes of its cluster are on its unit (and, with ``label``, with its label)."""
    g = clusters.code[worker]
    C = max(1, len(clusters.rho))
    key = unit * C + g
    if label is not None:
        key = key * (int(label.max(initial=0)) + 1) + label
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    return cnt[inv.reshape(-1)].astype(float)


def vote_weights(unit: np.ndarray, worker: np.ndarray, clusters: Clusters) -> np.ndarray | None:
    """Posterior weight of each vote, shape (V,): ``1 / (1 + rho (n - 1))``; None when no cluster is dependent
    (every weight 1)."""
    if not clusters.dependent or not len(unit):
        return None
    n = _cluster_counts(unit, worker, None, clusters)
    return 1.0 / (1.0 + clusters.rho[clusters.code[worker]] * (n - 1.0))


def copy_terms(unit: np.ndarray, worker: np.ndarray, label: np.ndarray,
               clusters: Clusters) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rho_v, share_v)`` (V,) for :func:`_bayes.loo_vote_loglik`: the copy probability of each vote (0 when
    no cluster mate voted on its unit) and the share of its label among its mates' votes."""
    if not clusters.dependent or not len(unit):
        return None
    mates = _cluster_counts(unit, worker, None, clusters) - 1.0
    same = _cluster_counts(unit, worker, label, clusters) - 1.0
    has = mates > 0
    rho = np.where(has, clusters.rho[clusters.code[worker]], 0.0)
    share = np.divide(same, mates, out=np.zeros(len(unit)), where=has)
    return rho, share
