"""The M-step of many EM fits at once: the race's folds and starts, one candidate, in one set of numpy calls.

The race fits each candidate on every training fold of every split, from every start (:mod:`.auto`): on a few
dozen items that is hundreds of small fits whose time goes to numpy's per-call overhead, not to arithmetic. These
functions are :func:`._bayes.m_step` and :func:`.difficulty.m_step` over a leading problem axis ``P``: the same
formulas, the concentration and tempering searches per problem. The results equal the single fits' up to the order
in which numpy adds a row's terms (rows without counts are kept here and add exact zeros).

Shapes: ``P`` problems, ``J`` workers, ``K`` classes, ``G`` grid points.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from llmens_core.aggregation import _bayes, _em, difficulty

__all__ = ["latent", "m_step"]

_GRID = _bayes.CONCENTRATION_GRID
_GAMMALN_GRID = gammaln(_GRID)
_COARSE = np.arange(0, len(_GRID), 4)
_FINE = np.arange(-3, 4)


def _symmetric(p: np.ndarray, K: int) -> np.ndarray:
    """One-coin matrices from accuracies ``p`` (P, J): shape (P, J, K, K)."""
    if K == 1:
        return np.ones(p.shape + (1, 1))
    out = np.empty(p.shape + (K, K))
    out[:] = ((1.0 - p) / (K - 1))[..., None, None]
    idx = np.arange(K)
    out[..., idx, idx] = p[..., None]
    return out


def _pooled_accuracy(N: np.ndarray) -> np.ndarray:
    """:func:`._bayes.pooled_accuracy` per problem, (P,) from ``N`` (P, J, K, K)."""
    K = N.shape[-1]
    return (np.einsum("pjkk->p", N) + 2.0) / (N.reshape(len(N), -1).sum(axis=1) + K + 1.0)


def _climb(evidence, at: np.ndarray, size: int) -> np.ndarray:
    """Grid indices (P,) of highest ``evidence``, climbing from ``at`` (P,) one neighbour at a time: the grid maximum
    of a unimodal evidence, found in a few evaluations when EM's last iteration ended near it."""
    at, moving = at.copy(), np.arange(len(at))
    while len(moving):
        around = np.clip(at[moving][:, None] + np.arange(-1, 2), 0, size - 1)
        values = evidence(around, moving)
        best = np.argmax(values, axis=1)  # ties keep the lower index, as a grid argmax does
        step = around[np.arange(len(moving)), best]
        moved = step != at[moving]
        at[moving] = step
        moving = moving[moved]
    return at


def _best_concentration(evidence, start: np.ndarray | None) -> np.ndarray:
    """:func:`._bayes._best_concentration` per problem, as grid indices (P,): ``evidence(at (P', G'), problems (P',))
    -> (P', G')``. Without ``start``, every fourth point and the neighbours of the best; from ``start`` (the
    previous EM iteration's indices), a climb (:func:`_climb`): both find the grid maximum of a unimodal evidence."""
    if start is not None:
        return _climb(evidence, start, len(_GRID))
    every = np.arange(evidence.n)
    coarse = evidence(np.broadcast_to(_COARSE, (evidence.n, len(_COARSE))), every)
    centre = _COARSE[np.argmax(coarse, axis=1)]
    at = np.clip(centre[:, None] + _FINE, 0, len(_GRID) - 1)  # clipped ends repeat a point: argmax keeps the first
    return at[every, np.argmax(evidence(at, every), axis=1)]


class _BetaBinomial:
    """Beta-binomial log evidence of successes ``succ`` out of ``n`` (P, J) at mean ``mean`` (P,), at grid indices
    ``at`` (P', G') of problems ``problems`` (P',)."""

    def __init__(self, succ: np.ndarray, n: np.ndarray, mean: np.ndarray):
        self.succ, self.tot, self.mean, self.n = succ[:, None], n[:, None], mean[:, None, None], len(succ)

    def __call__(self, at: np.ndarray, problems: np.ndarray) -> np.ndarray:
        m = _GRID[at][..., None]
        a, b = m * self.mean[problems], m * (1.0 - self.mean[problems])
        succ, tot = self.succ[problems], self.tot[problems]
        return (gammaln(succ + a) + gammaln(tot - succ + b) - gammaln(tot + m) - gammaln(a) - gammaln(b)
                + _GAMMALN_GRID[at][..., None]).sum(axis=-1)


class _Dirichlet:
    """Dirichlet-multinomial log evidence of the rows of ``N`` (P, R, K) under Dirichlet(s centre) (P, R, K), at grid
    indices ``at`` (P', G') of problems ``problems`` (P',). Only the cells with counts are evaluated: an empty cell
    adds ``gammaln(a) - gammaln(a) = 0``, and an empty row ``gammaln(s) - gammaln(s) = 0``."""

    def __init__(self, N: np.ndarray, centre: np.ndarray):
        self.n = len(N)
        counts = N.sum(axis=-1)  # (P, R)
        self.row_p, self.row_r = np.nonzero(counts > 0)
        self.row_n = counts[self.row_p, self.row_r]
        cp, cr, ck = np.nonzero(N > 0)
        self.cell_N, self.cell_c = N[cp, cr, ck], np.maximum(centre[cp, cr, ck], 1e-12)
        self.cell_p = cp
        self.cell_row = np.searchsorted(self.row_p * N.shape[1] + self.row_r, cp * N.shape[1] + cr)

    def __call__(self, at: np.ndarray, problems: np.ndarray) -> np.ndarray:
        slot = np.full(self.n, -1)
        slot[problems] = np.arange(len(problems))
        rows = np.flatnonzero(slot[self.row_p] >= 0)
        cells = np.flatnonzero(slot[self.cell_p] >= 0)
        s_cell = _GRID[at[slot[self.cell_p[cells]]]]  # (C, G')
        a = s_cell * self.cell_c[cells, None]
        G = at.shape[1]
        per_row = np.zeros((len(self.row_p), G))
        np.add.at(per_row, self.cell_row[cells], gammaln(self.cell_N[cells, None] + a) - gammaln(a))
        r_at = at[slot[self.row_p[rows]]]
        per_row[rows] += _GAMMALN_GRID[r_at] - gammaln(_GRID[r_at] + self.row_n[rows, None])
        out = np.zeros((len(problems), G))
        np.add.at(out, slot[self.row_p[rows]], per_row[rows])
        return out


def _onecoin_accuracy(N: np.ndarray, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`._bayes.onecoin_accuracy` per problem: accuracies (P, J) and the concentrations' grid indices (P,)."""
    tr = np.einsum("pjkk->pj", N)
    n = N.sum(axis=(2, 3))
    mean = np.clip(_pooled_accuracy(N), 1e-6, 1.0 - 1e-6)
    at = _best_concentration(_BetaBinomial(tr, n, mean), start)
    m = _GRID[at]
    return (tr + (m * mean)[:, None]) / (n + m[:, None]), at


def confusions(N: np.ndarray, structure: str, start: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`._bayes.confusions` per problem: confusions (P, J, K, K) and concentrations (P,) from ``N`` (P, J, K, K),
    and the searches' grid indices (``start`` of the next EM iteration's searches)."""
    P, J, K, _ = N.shape
    start = start or {}
    if structure == "pooled":
        return _symmetric(np.repeat(_pooled_accuracy(N)[:, None], J, axis=1), K), np.zeros(P), {}
    found = {}
    if structure == "shared":
        weak = _bayes._symmetric(np.array([2.0 / (K + 1.0)]), K)[0] * (K + 1.0)
        centre = np.broadcast_to(_em.normalise_rows(N.sum(axis=1) + weak)[:, None], N.shape)
    elif structure in ("onecoin", "full"):
        p, found["onecoin"] = _onecoin_accuracy(N, start.get("onecoin"))
        centre = _symmetric(p, K)
        if structure == "onecoin":
            return centre, _GRID[found["onecoin"]], found
    else:
        raise ValueError(f"structure must be one of {_bayes.STRUCTURES}, got {structure!r}")
    found["rows"] = _best_concentration(_Dirichlet(N.reshape(P, J * K, K), centre.reshape(P, J * K, K)),
                                        start.get("rows"))
    s = np.where(N.reshape(P, -1).sum(axis=1) > 0, _GRID[found["rows"]], 1.0)  # no counts: evidence 0 everywhere
    return _em.normalise_rows(N + s[:, None, None, None] * centre), s, found


def _class_prior(class_counts: np.ndarray, kind: str) -> np.ndarray:
    """:func:`._bayes.class_prior` per problem, (P, K) from class counts (P, K)."""
    if kind == "uniform":
        return np.full(class_counts.shape, 1.0 / class_counts.shape[-1])
    if kind == "learned":
        return _em.normalise_rows(class_counts + 1.0)
    raise ValueError(f"class_prior must be one of {_bayes.CLASS_PRIORS}, got {kind!r}")


def _temper_loglik(theta: np.ndarray, hard: np.ndarray, at: np.ndarray, problems: np.ndarray) -> np.ndarray:
    """:func:`.difficulty._hard_loglik` at exponents ``TEMPER_GRID[at]`` (P', G') of problems ``problems`` (P',),
    from ``theta`` and ``hard`` (P, J, K, K): (P', G'). The expected log-likelihood is concave in the exponent."""
    lt = np.log(np.maximum(theta[problems], 1e-300))
    scaled = difficulty.TEMPER_GRID[at][:, :, None, None, None] * lt[:, None]  # (P', G', J, K, K)
    m = scaled.max(axis=-1, keepdims=True)
    log_rows = scaled - (m + np.log(np.exp(scaled - m).sum(axis=-1, keepdims=True)))
    return np.einsum("pjkl,pgjkl->pg", hard[problems], log_rows)


def m_step(N: np.ndarray, class_counts: np.ndarray, structure: str, class_prior: str, hard: bool,
           start: dict | None = None) -> dict[str, np.ndarray]:
    """Parameters of one candidate per problem from soft counts ``N`` (P, J, Z, K) and class counts (P, Z), ``Z``
    ``K`` latent states, or ``2K`` with difficulty (``hard``): ``theta`` (P, J, K, K), ``pi`` (P, K),
    ``concentration`` (P,), ``hard_share`` and ``temper`` (P,), and ``at``, the grid indices the searches found
    (pass them as ``start`` to the next EM iteration: the searches then climb from there)."""
    P, K = len(N), N.shape[-1]
    if not hard:
        theta, s, at = confusions(N, structure, start)
        return {"theta": theta, "pi": _class_prior(class_counts, class_prior), "concentration": s,
                "hard_share": np.zeros(P), "temper": np.ones(P), "at": at}
    easy, hard_counts = N[:, :, :K], N[:, :, K:]
    theta, s, at = confusions(easy, structure, start)
    size = len(difficulty.TEMPER_GRID)
    evidence = lambda grid, problems: _temper_loglik(theta, hard_counts, grid, problems)  # noqa: E731
    if start is None or "temper" not in start:
        at["temper"] = np.argmax(evidence(np.broadcast_to(np.arange(size), (P, size)), np.arange(P)), axis=1)
    else:
        at["temper"] = _climb(evidence, start["temper"], size)
    t = np.where(hard_counts.reshape(P, -1).sum(axis=1) > 0, difficulty.TEMPER_GRID[at["temper"]], 1.0)
    pi = _class_prior(class_counts[:, :K] + class_counts[:, K:], class_prior)
    rho = (class_counts[:, K:].sum(axis=1) + 1.0) / (class_counts.sum(axis=1) + 2.0)
    return {"theta": theta, "pi": pi, "concentration": s, "hard_share": rho, "temper": t, "at": at}


def latent(params: dict[str, np.ndarray], hard: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.difficulty.latent` per problem: confusions over the latent states (P, J, Z, K) and their prior (P, Z)."""
    theta, pi = params["theta"], params["pi"]
    if not hard:
        return theta, pi
    rho, t = params["hard_share"][:, None], params["temper"][:, None, None, None]
    return (np.concatenate([theta, difficulty.temper(theta, t)], axis=2),
            np.concatenate([pi * (1.0 - rho), pi * rho], axis=1))


def fitted(params: dict[str, np.ndarray], p: int) -> _bayes.Fitted:
    """Problem ``p``'s parameters as a :class:`._bayes.Fitted`."""
    return _bayes.Fitted(params["theta"][p], params["pi"][p], float(params["concentration"][p]),
                         hard_share=float(params["hard_share"][p]), temper=float(params["temper"][p]))
