"""Vectorised building blocks of Dawid-Skene EM shared by the batch and the online models.

Nothing here loops over votes in Python: votes are index arrays and sums are ``np.bincount``.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-300
ONE_BINCOUNT = 65_536
"""Up to this many (vote, latent state) cells, E-step sums are one ``bincount`` (calls cost more than cells there), else
one per latent state (less memory traffic); the sums are the same, added in vote order either way."""


def prior_alpha(n_classes: int, accuracy: float, strength: float) -> np.ndarray:
    """Dirichlet pseudo-counts for one confusion matrix, shape (K, K): each row sums to ``strength`` and puts
    ``accuracy`` of it on the diagonal (for K = 1 the single cell gets all of it)."""
    K = n_classes
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"prior_accuracy must be in (0, 1), got {accuracy}")
    if strength < 0:
        raise ValueError(f"prior_strength must be >= 0, got {strength}")
    if K == 1:
        return np.full((1, 1), float(strength))
    a = np.full((K, K), strength * (1.0 - accuracy) / (K - 1))
    np.fill_diagonal(a, strength * accuracy)
    return a


def sparse_onecoin_prior(
    N: np.ndarray, alpha: np.ndarray, prior_accuracy: float, strength: float, sparse_strength: float
) -> np.ndarray:
    """Hierarchical Dirichlet pseudo-counts per worker, shape (J, K, K), from the current soft counts ``N``.

    Each row of worker ``j`` gets ``s_j = strength + b_j`` pseudo-counts with ``b_j = sparse_strength * K /
    sqrt(1 + n_j)`` (``n_j`` = the worker's answers): a share ``b_j / s_j`` of them follows the worker's own
    one-coin (symmetric) matrix (accuracy ``p_j`` = its smoothed trace share, errors spread evenly), the rest
    the population matrix ``normalise(sum_j N_j + alpha)``. A worker with few answers is thus shrunk hard
    towards one-coin (one number to learn instead of K(K-1)); a dense worker keeps its full confusion.
    """
    J, K, _ = N.shape
    n_j = N.sum(axis=(1, 2))
    oc = onecoin_prior(N, prior_accuracy, 1.0)
    pooled = normalise_rows(N.sum(axis=0) + alpha)
    b_j = sparse_strength * K / np.sqrt(1.0 + n_j)
    s_j = strength + b_j
    w = np.divide(b_j, s_j, out=np.zeros(J), where=s_j > 0)[:, None, None]
    return s_j[:, None, None] * (w * oc + (1.0 - w) * pooled[None])


def onecoin_prior(N: np.ndarray, prior_accuracy: float, strength: float) -> np.ndarray:
    """Pseudo-counts per worker, shape (J, K, K): every row sums to ``strength`` and follows the worker's own
    one-coin (symmetric) matrix, accuracy = its smoothed trace share of the soft counts ``N`` (J, K, K).

    Rows with little mass (rare classes, classes that never occur) stay one-coin, so a handful of items
    cannot teach EM a "phantom class" that explains other classes' votes; rows with plenty of data
    are free to learn a full confusion.
    """
    J, K, _ = N.shape
    tr = np.einsum("jkk->j", N)
    n_j = N.sum(axis=(1, 2))
    p_j = (tr + 2.0 * prior_accuracy) / (n_j + 2.0)
    oc = np.empty((J, K, K))
    oc[:] = ((1.0 - p_j) / max(K - 1, 1))[:, None, None]
    idx = np.arange(K)
    oc[:, idx, idx] = p_j[:, None] if K > 1 else 1.0
    return strength * oc


def normalise_rows(counts: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Rows (last axis) of non-negative counts to probabilities; a row of zeros becomes uniform. Never NaN."""
    c = np.maximum(counts, 0.0) + floor
    return c / c.sum(axis=-1, keepdims=True)


def vote_weights(
    item: np.ndarray, worker: np.ndarray, family: np.ndarray | None, rho: float, n_items: int
) -> np.ndarray:
    """Composite-likelihood weight of each vote, shape (V,).

    A vote of a worker whose family has ``n`` voters on that item gets ``1 / (1 + rho (n - 1))``: the design
    effect of ``n`` votes with within-family correlation ``rho``. ``rho = 1`` pools a family into one vote
    (geometric mean of its members' likelihoods), ``rho = 0`` is textbook Dawid-Skene.
    """
    if family is None or rho == 0.0 or not len(item):
        return np.ones(len(item))
    f = family[worker]
    n_fam = int(family.max()) + 1
    key = item * n_fam + f
    # counts per (item, family) key without an I*F array: unique over the keys present
    uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    n = cnt[inv.reshape(-1)].astype(float)
    return 1.0 / (1.0 + rho * (n - 1.0))


def log_joint(
    unit: np.ndarray,
    wl: np.ndarray,
    c: np.ndarray,
    log_pi: np.ndarray,
    log_theta: np.ndarray,
    n_units: int,
) -> np.ndarray:
    """``log pi[z] + sum_v c_v log theta[w_v, z, l_v]`` per unit, shape (U, Z).

    ``wl = worker * K + label`` (shape (V,)), ``log_theta`` shape (J, Z, K) indexed [worker, latent, given]: the
    latent states are the K classes, or (class, difficulty) pairs (:mod:`.difficulty`).
    """
    J, Z, K = log_theta.shape
    out = np.empty((n_units, Z))
    if len(unit):
        lt = np.ascontiguousarray(log_theta.transpose(0, 2, 1)).reshape(J * K, Z)
        contrib = lt[wl]  # (V, Z)
        if c is not None:
            contrib *= c[:, None]
        if len(unit) * Z <= ONE_BINCOUNT:
            cell = (unit * Z)[:, None] + np.arange(Z)  # (V, Z): each sum in vote order, as per column
            out[:] = np.bincount(cell.ravel(), weights=contrib.ravel(), minlength=n_units * Z).reshape(n_units, Z)
        else:
            for k in range(Z):
                out[:, k] = np.bincount(unit, weights=contrib[:, k], minlength=n_units)
    else:
        out[:] = 0.0
    out += log_pi[None, :]
    return out


def softmax_rows(log_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax and log-normaliser, shapes (U, K) and (U,)."""
    m = log_t.max(axis=1, keepdims=True)
    e = np.exp(log_t - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, (m + np.log(s)).ravel()


def confusion_counts(unit: np.ndarray, wl: np.ndarray, weighted_t: np.ndarray, n_workers: int,
                     n_labels: int | None = None) -> np.ndarray:
    """Soft confusion counts ``N[w, z, l] = sum_{v: w_v=w, l_v=l} T[u_v, z]``, shape (J, Z, K) for posteriors ``T``
    (U, Z) over latent states and ``K = n_labels`` labels (default ``Z``)."""
    U, Z = weighted_t.shape
    K = Z if n_labels is None else n_labels
    J = n_workers
    if not len(unit):
        return np.zeros((J, Z, K))
    g = weighted_t[unit]  # (V, Z)
    if len(unit) * Z <= ONE_BINCOUNT:
        cell = ((wl // K) * (Z * K) + wl % K)[:, None] + K * np.arange(Z)  # (V, Z) -> [w, z, l], in vote order
        return np.bincount(cell.ravel(), weights=g.ravel(), minlength=J * Z * K).reshape(J, Z, K)
    out = np.empty((J, Z, K))
    for k in range(Z):
        out[:, k, :] = np.bincount(wl, weights=g[:, k], minlength=J * K).reshape(J, K)
    return out


def compress_patterns(
    item: np.ndarray, worker: np.ndarray, label: np.ndarray, n_items: int, n_workers: int, n_classes: int
):
    """Group items with identical vote patterns (exact: EM on patterns with multiplicities is EM on items).

    Returns ``(unit_of_item (I,), mult (U,), unit (V'), worker (V'), label (V'))`` where the vote arrays hold the
    votes of one representative item per pattern, or ``None`` when compression does not apply (duplicate
    (item, worker) votes, patterns that do not fit an int64 key, or too little gain).
    """
    J, K = n_workers, n_classes
    base = K + 1
    if J == 0 or J * np.log2(base) > 62 or n_items * J > 50_000_000 or n_items < 64:
        return None
    pair = item * J + worker
    if np.bincount(pair, minlength=n_items * J).max(initial=0) > 1:
        return None
    dense = np.full((n_items, J), K, dtype=np.int64)
    dense[item, worker] = label
    powers = base ** np.arange(J, dtype=np.int64)
    key = dense @ powers
    _, first, inv, mult = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    if len(first) > 0.5 * n_items:
        return None
    inv = inv.reshape(-1)
    is_rep = np.zeros(n_items, dtype=bool)
    is_rep[first] = True
    keep = is_rep[item]
    return inv, mult.astype(float), inv[item[keep]], worker[keep], label[keep]


def _rows_in_order(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]):
    """A CSR matrix of ``shape`` with one entry per (row, col, value), each row's entries in the given order
    (duplicates kept, not summed)."""
    from scipy.sparse import csr_matrix

    order = np.argsort(rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return csr_matrix((data[order], cols[order], indptr), shape=shape)


def vote_matrices(unit: np.ndarray, wl: np.ndarray, c: np.ndarray | None, n_units: int, n_cells: int):
    """The votes as two sparse matrices for many E-steps on the same votes: ``by_unit`` (U, J K), so that
    ``by_unit @ lt`` is :func:`log_joint` without the prior for ``lt`` (J K, Z) (``log_theta`` [worker, given,
    latent]), and ``by_cell`` (J K, U), so that ``by_cell @ Tm`` is :func:`confusion_counts` as (J K, Z). Each sum
    runs over its votes in vote order, as those functions' bincounts do: the same numbers, one pass over the votes."""
    ones = np.ones(len(unit))
    return (_rows_in_order(unit, wl, ones if c is None else np.asarray(c, dtype=float), (n_units, n_cells)),
            _rows_in_order(wl, unit, ones, (n_cells, n_units)))
