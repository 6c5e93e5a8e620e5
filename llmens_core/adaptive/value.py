"""Value of information of asking more LLMs, under a model's read-only parameters snapshot.

Everything here reads only the public surface of the online model: ``classes_``, ``priors_``,
``posterior(votes)`` and the :class:`~llmens_core.aggregation.ModelParams` snapshot of ``params()``
(log confusions, log class prior, prior rows of an unknown LLM, and the posterior weights of correlated
LLMs). Per snapshot, what depends only on the parameters (each LLM's confusion rows, their transposes,
exponentials and CDFs, its mutual information) is derived once and kept in a :class:`weakref.WeakKeyDictionary`
keyed by the snapshot: the model hands out a new snapshot when it changes, and the old one's derived values go
with it (no size bound or version bookkeeping needed).

Expected gain: for votes ``v`` the posterior is ``p`` and the decision ``d = argmax p``; asking the LLMs not
asked yet (``R``) has expected accuracy gain

    gain = E_{v_R ~ p(v_R | v)} [ max_k q(k | v, v_R) - q(d | v, v_R) ]

(``q`` the posterior with all votes, ``p(v_R | v) = sum_k p_k prod_j theta_j[k, l_j]``): 0 iff no answer of
the unasked LLMs can flip ``d``. Exact (all outcomes enumerated as one broadcast array) when there are at most
``exact_outcomes`` of them, else Monte Carlo stratified by true class with a generator seeded by the votes.
Abstentions of unasked LLMs are not modelled (more gain, i.e. more asking, than reality).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmens_core.aggregation import ModelParams, OnlineDawidSkene

__all__ = ["expected_gain", "informativeness"]


class _Derived:
    """Per-LLM quantities of one parameters snapshot, filled lazily (shapes (K, K))."""

    __slots__ = ("_params", "rows_t", "probs", "cdf", "info")

    def __init__(self, params: ModelParams):
        self._params = weakref.ref(params)  # a strong reference would keep its own cache key alive
        self.rows_t: dict = {}
        self.probs: dict = {}
        self.cdf: dict = {}
        self.info: dict = {}

    def log_rows(self, llm: Hashable) -> np.ndarray:
        """log P(label | true class) (true class x label); the prior rows for an LLM the model does not know."""
        return self._params().log_rows(llm)

    def log_rows_t(self, llm: Hashable) -> np.ndarray:
        """(label x true class), contiguous."""
        out = self.rows_t.get(llm)
        if out is None:
            out = self.rows_t[llm] = np.ascontiguousarray(self.log_rows(llm).T)
        return out

    def theta(self, llm: Hashable) -> np.ndarray:
        out = self.probs.get(llm)
        if out is None:
            out = self.probs[llm] = np.exp(self.log_rows(llm))
        return out

    def answer_cdf(self, llm: Hashable) -> np.ndarray:
        """Row-wise CDF of the LLM's answer given each true class."""
        out = self.cdf.get(llm)
        if out is None:
            out = self.cdf[llm] = np.cumsum(self.theta(llm), axis=1)
        return out


_DERIVED: weakref.WeakKeyDictionary[ModelParams, _Derived] = weakref.WeakKeyDictionary()


def _derived(model: OnlineDawidSkene) -> tuple[ModelParams, _Derived]:
    p = model.params()
    d = _DERIVED.get(p)
    if d is None:
        d = _DERIVED[p] = _Derived(p)
    return p, d


def _mutual_information(priors: np.ndarray, lt: np.ndarray) -> float:
    theta = np.exp(lt)
    joint = priors[:, None] * theta
    marginal = joint.sum(axis=0)
    return float(np.sum(joint * (np.log(theta) - np.log(marginal)[None, :])))


def informativeness(model: OnlineDawidSkene, llm: Hashable) -> float:
    """Mutual information (nats) between the true class and ``llm``'s label under ``model`` (its class prior and
    confusion; the prior confusion for an LLM it does not know). 0 for a model without classes."""
    if not model.classes_:
        return 0.0
    _, d = _derived(model)
    out = d.info.get(llm)
    if out is None:
        out = d.info[llm] = _mutual_information(model.priors_, d.log_rows(llm))
    return out


def _gain_rows(final: np.ndarray, d: int) -> np.ndarray:
    """``max_k q_k - q_d`` of the softmax ``q`` of every row of ``final`` (overwritten)."""
    final -= final.max(axis=-1, keepdims=True)
    np.exp(final, out=final)
    s = final.sum(axis=-1)
    return final.max(axis=-1) / s - final[..., d] / s


def _exact_independent(der: _Derived, cur: np.ndarray, rem: list, d: int) -> float:
    """Every weight 1: ``P(o) q(k | o) = cur_k prod_r theta_r[k, l_r] =: M[k, o]``, gain ``sum_o max_k M - M_d``
    (no softmax per outcome)."""
    K = len(cur)
    M = cur.reshape(K, 1)
    for w in rem:
        M = (M[:, :, None] * der.theta(w)[:, None, :]).reshape(K, -1)
    return float((M.max(axis=0) - M[d]).sum())


def _exact_weighted(der: _Derived, cur, base, rem: list, wts: list, d: int) -> float:
    """All outcomes, axes 0..R-1 (itertools.product order), true class last; votes with posterior weights."""
    K, R = len(cur), len(rem)
    like = final = None
    for r, (w, wt) in enumerate(zip(rem, wts, strict=True)):
        cols = der.log_rows_t(w).reshape((1,) * r + (K,) + (1,) * (R - 1 - r) + (K,))
        like = cols if like is None else like + cols
        final = (base + wt * cols) if final is None else final + wt * cols
    prob = np.exp(like.reshape(-1, K)) @ cur  # predictive probability of each outcome
    return float(np.dot(prob, _gain_rows(np.ascontiguousarray(final).reshape(-1, K), d)))


def _monte_carlo(der: _Derived, cur, base, rem: list, wts: list, d: int, samples: int, key: str) -> float:
    """``samples`` answer draws per likely class (posterior > 1e-6; the rest counts as lost), seeded by ``key``."""
    K, R = len(cur), len(rem)
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    likely = np.nonzero(cur > 1e-6)[0]
    u = rng.random((R, len(likely), samples, 1))
    cdf = np.stack([der.answer_cdf(w)[likely] for w in rem])  # (R, L, K)
    u *= cdf[:, :, None, -1:]
    labs = np.minimum((u > cdf[:, :, None, :]).sum(axis=3), K - 1)  # (R, L, S)
    final = np.broadcast_to(base, (len(likely), samples, K)).copy()
    for r, (w, wt) in enumerate(zip(rem, wts, strict=True)):
        final += wt * der.log_rows_t(w)[labs[r]]
    return float(np.dot(cur[likely], _gain_rows(final, d).mean(axis=1)) + cur[cur <= 1e-6].sum())


def expected_gain(
    model: OnlineDawidSkene,
    votes: Mapping[Hashable, Hashable | None],
    remaining: Sequence[Hashable],
    *,
    samples: int = 64,
    exact_outcomes: int = 4096,
    seed: int = 0,
) -> float:
    """Expected accuracy gain, under ``model``, of also asking ``remaining`` (see the module docstring).

    The posterior weights of correlated LLMs (``ModelParams.vote_weights``) are those of the votes once every
    remaining LLM has answered, as in ``model.posterior``. Posteriors here, the current one included, are the
    snapshot's product of rows: for a model with item difficulty that is its marginal rows' approximation of
    the easy/hard mixture ``model.posterior`` computes. 0 when nothing remains.
    """
    K = len(model.classes_)
    rem = [w for w in dict.fromkeys(remaining) if w not in votes or votes[w] is None]
    if K == 0 or not rem:
        return 0.0
    p, der = _derived(model)
    asked = [(w, p.label_index(lab)) for w, lab in votes.items() if lab is not None]
    asked = [(w, k) for w, k in asked if k is not None]
    wall = p.vote_weights([w for w, _ in asked] + rem).tolist()
    base = p.log_pi.copy()
    for (w, k), wt in zip(asked, wall, strict=False):
        base += wt * der.log_rows(w)[:, k]
    cur = np.exp(base - base.max())
    cur /= cur.sum()
    d = int(np.argmax(cur))
    wts = wall[len(asked):]
    if exact_outcomes >= K ** len(rem):
        if all(wt == 1.0 for wt in wall):
            return _exact_independent(der, cur, rem, d)
        return _exact_weighted(der, cur, base, rem, wts, d)
    key = repr((seed, sorted((str(w), str(lab)) for w, lab in votes.items()), [str(w) for w in rem]))
    return _monte_carlo(der, cur, base, rem, wts, d, samples, key)
