"""Correlated workers found from the votes: pairs that agree more than any independent explanation allows.

Under Dawid-Skene's conditional independence with one-coin workers, the chance-corrected agreement of two
workers, ``s_ab = (K A_ab - 1) / (K - 1)`` (``A_ab`` the share of shared units where they agree), factorises
as ``r_a r_b`` with ``r = (K p - 1) / (K - 1)`` each worker's reliability: the off-diagonal of ``s`` is rank
one. Dependence is a sparse positive residual on top of it (the low-rank-plus-sparse view of dependency
learning in weak supervision, Varma et al. 2019; FlyingSquid's triplet identities are the same factorisation).
:func:`find_clusters` fits ``r`` by weighted least squares on the pairs not yet flagged, flags the pair of
largest standardised residual if it is significant (one-sided z-test, Bonferroni level 0.05 over the pairs
tested: a convention, not a value chosen by accuracy), refits, and stops when no residual is significant.
Fitting the rank-one part without the flagged pairs is what keeps a dependent block from passing itself
off as the truth (it would under a Dawid-Skene fit, which the block dominates). The statistics are raw
agreement counts, so they need no fitted model (the online model accumulates them as they come).

Identifiability: a block of agreeing workers that outnumbers the rest is equally well explained as accurate
independent workers plus a dependent minority; the fit then prefers the explanation with fewer dependent
pairs. Workers whose votes are identical on every unit they share are joined with strength 1: a copy adds
no evidence, and if they were independent and perfect, one vote would decide anyway. A declared family
(``EndpointConfig.family``) is a hint: two members of one family are joined when their residual is positive.

Within a cluster the strength ``rho`` (n-weighted mean over its flagged pairs of ``(s - r_a r_b) / (1 - r_a
r_b)``, in [0, 1]) serves twice:

- posterior: a vote of a cluster with ``n`` voters on a unit counts ``1 / (1 + rho (n - 1))`` (the design
  effect of ``n`` votes with correlation ``rho``; ``rho = 1`` makes the cluster one vote);
- held-out vote likelihood: a cluster member's vote copies a mate with probability ``rho``, else follows its
  confusion matrix, so the selection criterion weighs the dependent model against the independent one.

Shapes: ``V`` votes, ``P`` vote pairs, ``J`` workers, ``C`` clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["Clusters", "PairStats", "find_clusters", "pair_stats", "vote_weights", "copy_terms", "INDEPENDENT"]

SIGNIFICANCE = 0.05
"""Family-wise level of the residual-dependence tests (Bonferroni over the pairs tested)."""


@dataclass(frozen=True)
class PairStats:
    """Sums over co-voted units, symmetric: ``obs`` (J, J) agreements, ``n`` (J, J) units voted on by both."""

    obs: np.ndarray
    n: np.ndarray

    @classmethod
    def zeros(cls, J: int) -> PairStats:
        return cls(np.zeros((J, J)), np.zeros((J, J)))

    def as_array(self) -> np.ndarray:
        """Shape (2, J, J): obs, n."""
        return np.stack([self.obs, self.n])

    @classmethod
    def from_array(cls, a: np.ndarray) -> PairStats:
        return cls(a[0], a[1])


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


def pair_stats(unit: np.ndarray, worker: np.ndarray, label: np.ndarray, n_workers: int,
               mult: np.ndarray | None = None) -> PairStats:
    """Agreement counts of every worker pair; ``mult`` (U,) counts each unit that many times.

    As sparse products (``P.T @ diag(mult) @ P`` over the (unit, worker) vote counts ``P``, and the same per label),
    so the cost grows with the pairs of votes on a unit, in compiled code: a wide crowd (333 items, 825 workers,
    92,000 votes: 12.7 million vote pairs) takes a fraction of a second. A vote is not paired with itself."""
    from scipy import sparse

    J = n_workers
    if not len(unit):
        return PairStats.zeros(J)
    m = np.ones(int(unit.max()) + 1) if mult is None else np.asarray(mult, dtype=float)
    U = len(m)
    L = int(label.max()) + 1

    def gram(rows: np.ndarray, n_rows: int, row_weight: np.ndarray) -> np.ndarray:
        X = sparse.csr_matrix((np.ones(len(rows)), (rows, worker)), shape=(n_rows, J))
        g = (X.T @ sparse.diags(row_weight) @ X).toarray()
        g[np.diag_indices(J)] -= np.bincount(worker, weights=row_weight[rows], minlength=J)
        return g

    return PairStats(gram(unit * L + label, U * L, np.repeat(m, L)), gram(unit, U, m))


def _rank_one(s: np.ndarray, w: np.ndarray, iters: int = 30) -> np.ndarray:
    """``r >= 0`` (J,) minimising ``sum w_ab (s_ab - r_a r_b)^2`` over the pairs with weight ``w > 0``."""
    ws, wsum = w * s, w.sum(axis=1)
    r = np.sqrt(np.clip(np.divide(ws.sum(axis=1), wsum, out=np.zeros(len(s)), where=wsum > 0), 0, 1))
    for _ in range(iters):  # matrix-vector products: no (J, J) temporaries per iteration
        den = w @ (r * r)
        r = np.clip(np.divide(ws @ r, den, out=r.copy(), where=den > 0), 0.0, 1.0)
    return r


def _z(s, se, free, r):
    return np.where(free, (s - np.outer(r, r)) / se, -np.inf)


def _groups(s: np.ndarray, tested: np.ndarray, blocks: tuple[np.ndarray, ...] = ()
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Candidate dependent groups: the clusters of an average-linkage hierarchy on ``1 - s`` (pairs never
    co-voted at distance 1), with at least 2 and at most half of the workers (a dependent block must be a
    minority to be identifiable, see the module docstring); and for each (J, J) matrix of ``blocks``, its sum over
    every group's block, (G,). A merge's block is its two parts' blocks and the cross terms between them, so all
    the sums cost one pass over the pairs."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    J = len(s)
    dist = np.where(tested, 1.0 - np.clip(s, -1.0, 1.0), 2.0)
    np.fill_diagonal(dist, 0.0)
    members: list[np.ndarray] = [np.array([j]) for j in range(J)]
    sums = [list(np.diagonal(m)) for m in blocks]
    out, out_sums = [], [[] for _ in blocks]
    for a, b, _, _ in linkage(squareform(dist, checks=False), method="average"):
        ma, mb = members[int(a)], members[int(b)]
        members.append(np.concatenate([ma, mb]))
        for m, acc in zip(blocks, sums, strict=True):
            acc.append(acc[int(a)] + acc[int(b)] + 2.0 * m[np.ix_(ma, mb)].sum())
        if len(members[-1]) <= max(2, J // 2):
            out.append(members[-1])
            for acc, o in zip(sums, out_sums, strict=True):
                o.append(acc[-1])
    return out, [np.asarray(o, dtype=float) for o in out_sums]


def _sse(s, se, free, w) -> float:
    r = _rank_one(s, np.where(free, w, 0.0))
    return float(np.where(free, ((s - np.outer(r, r)) / se) ** 2, 0.0).sum()) / 2.0


REFIT_GROUPS = 16
"""Candidate groups refitted exactly each round (:func:`_best_group`): a cost bound, so that a wide crowd (hundreds
of workers, as many candidate groups) costs a few rank-one fits a round, not one per group. A panel of up to 17
workers has at most 16 candidate groups: every one is refitted."""


def _best_group(s, se, w, free, tested, penalty: float, r: np.ndarray) -> np.ndarray | None:
    """The candidate group (:func:`_groups`) whose pairs, left out of the rank-one fit, lower the squared
    standardised residual most beyond ``penalty`` per pair left out; None when no group does. The gain of leaving a
    group out is first computed with the reliabilities of the fit on every free pair held fixed (the group's own
    squared residuals: one pass for all the groups), and the :data:`REFIT_GROUPS` groups of largest such gain are
    refitted without their pairs, as the test asks. ``r`` (J,) is the rank-one fit on the free pairs."""
    z2 = np.where(free, ((s - np.outer(r, r)) / se) ** 2, 0.0)
    base = float(z2.sum()) / 2.0
    groups, (held, n_free) = _groups(s, tested, (z2, free.astype(float)))
    if not groups:
        return None
    gain_held = held / 2.0 - penalty * (n_free // 2)
    refit = set(np.argsort(-gain_held, kind="stable")[:REFIT_GROUPS].tolist())
    best, best_gain = None, 0.0
    for i, g in enumerate(groups):
        if i not in refit:
            continue
        inside = np.zeros_like(free)
        inside[np.ix_(g, g)] = True
        inside &= free
        k = int(inside.sum()) // 2
        if not k:
            continue
        gain = base - _sse(s, se, free & ~inside, w) - penalty * k
        if gain > best_gain:
            best, best_gain = inside, gain
    return best


def residual_dependence(stats: PairStats, n_classes: int, max_rounds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Flagged (dependent) pairs (J, J) bool and the residual strength per pair (J, J) (see the module
    docstring). While some residual is significant, the group of workers whose pairs, once left out,
    explain the rest best is flagged (each pair left out must lower the chi-square by ``z_crit ** 2``: a
    dominating block fits its own pairs well and shows as the residual of everyone else, so single pairs of
    largest residual would blame the wrong workers)."""
    J, K = len(stats.n), max(n_classes, 2)
    tested = (stats.n > 0) & ~np.eye(J, dtype=bool)
    A = np.divide(stats.obs, stats.n, out=np.zeros((J, J)), where=tested)
    s = (K * A - 1.0) / (K - 1.0)
    nn = np.maximum(stats.n, 1.0)
    se = np.sqrt(np.maximum(A * (1.0 - A), 1.0 / nn) / nn) * K / (K - 1)
    z_crit = NormalDist().inv_cdf(1.0 - SIGNIFICANCE / max(1, int(tested.sum()) // 2))
    flagged = tested & (stats.obs >= stats.n * (1.0 - 1e-12))  # exact copies are dependent from the start
    r = None  # the rank-one fit on the pairs not flagged, once they stop changing
    for _ in range(max_rounds):
        free = tested & ~flagged
        r = _rank_one(s, np.where(free, stats.n, 0.0)) if free.any() else None
        if r is None or not _z(s, se, free, r).max() > z_crit:
            break
        group = _best_group(s, se, stats.n, free, tested, z_crit**2, r)
        if group is None:
            break
        flagged |= group
    else:
        r = None
    if r is None:
        r = _rank_one(s, np.where(tested & ~flagged, stats.n, 0.0))
    fit = np.outer(r, r)
    strength = np.clip(np.divide(s - fit, 1.0 - fit, out=np.zeros((J, J)), where=fit < 1.0), 0.0, 1.0)
    return flagged & (strength > 0), strength


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


def find_clusters(stats: PairStats, n_classes: int, hint: np.ndarray | None = None) -> Clusters:
    """Clusters of dependent workers from agreement counts (see the module docstring). ``hint`` (J,) declared
    family codes (``-1`` = none) joins two members of one family whose residual is positive."""
    J = len(stats.n)
    flagged, strength = residual_dependence(stats, n_classes)
    duplicate = (stats.n > 0) & (stats.obs >= stats.n * (1.0 - 1e-12)) & ~np.eye(J, dtype=bool)
    edges = flagged | duplicate
    if hint is not None:
        same = (hint[:, None] == hint[None, :]) & (hint[:, None] >= 0) & ~np.eye(J, dtype=bool)
        edges |= same & (stats.n > 0) & (strength > 0)
    code = _components(edges)
    C = int(code.max()) + 1 if J else 0
    rho = np.zeros(C)
    for g in range(C):
        members = code == g
        pairs = members[:, None] & members[None, :] & edges
        if not pairs.any():
            continue
        if duplicate[pairs].all():
            rho[g] = 1.0
            continue
        rho[g] = float(np.average(strength[pairs], weights=stats.n[pairs]))
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

