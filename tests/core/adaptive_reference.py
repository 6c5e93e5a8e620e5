"""The adaptive policy before its per-model caches and vectorised enumeration (commit 9fbfcf7), kept verbatim.

The reference that ``tests/core/test_adaptive.py`` compares the optimised code with and that
``bench/adaptive_cpu.py`` times: ``RefPolicy`` (:class:`AdaptivePolicy` with the unoptimised
``value``/``ranked``/``plan``/``gain``/``unsettled``), ``ref_informativeness`` and ``ref_expected_gain``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmens_core.adaptive import AdaptivePolicy
from llmens_core.aggregation import OnlineDawidSkene


def _ref_log_rows(model: OnlineDawidSkene, llm: Hashable) -> np.ndarray:
    return model.params().log_rows(llm)


def ref_informativeness(model: OnlineDawidSkene, llm: Hashable) -> float:
    if not model.classes_:
        return 0.0
    theta = np.exp(_ref_log_rows(model, llm))
    joint = model.priors_[:, None] * theta
    marginal = joint.sum(axis=0)
    return float(np.sum(joint * (np.log(theta) - np.log(marginal)[None, :])))


def ref_expected_gain(
    model: OnlineDawidSkene,
    votes: Mapping[Hashable, Hashable | None],
    remaining: Sequence[Hashable],
    *,
    samples: int = 64,
    exact_outcomes: int = 4096,
    seed: int = 0,
) -> float:
    K = len(model.classes_)
    rem = [w for w in dict.fromkeys(remaining) if w not in votes or votes[w] is None]
    if K == 0 or not rem:
        return 0.0
    params = model.params()
    asked = [(w, params.label_index(lab)) for w, lab in votes.items() if lab is not None]
    asked = [(w, k) for w, k in asked if k is not None]
    def fam_of(w):
        j = params.index(w)
        return ("new", w) if j is None else int(params.cluster[j])

    n_fam: dict = {}
    for w in [w for w, _ in asked] + rem:
        f = fam_of(w)
        n_fam[f] = n_fam.get(f, 0) + 1

    def weight(w) -> float:
        f = fam_of(w)
        return 1.0 if isinstance(f, tuple) else 1.0 / (1.0 + params.rho[f] * (n_fam[f] - 1))

    base = params.log_pi.copy()
    for w, k in asked:
        base += weight(w) * _ref_log_rows(model, w)[:, k]
    cur = np.exp(base - base.max())
    cur /= cur.sum()
    d = int(np.argmax(cur))
    logs = [_ref_log_rows(model, w) for w in rem]
    wts = np.array([weight(w) for w in rem])

    def gain_of(final: np.ndarray) -> np.ndarray:
        final = final - final.max(axis=-1, keepdims=True)
        q = np.exp(final)
        q /= q.sum(axis=-1, keepdims=True)
        return q.max(axis=-1) - q[..., d]

    if K ** len(rem) <= exact_outcomes:
        labels = np.array(list(itertools.product(range(K), repeat=len(rem))), dtype=np.int64)
        like = np.zeros((len(labels), K))
        final = np.broadcast_to(base, (len(labels), K)).copy()
        for r, (lt, w) in enumerate(zip(logs, wts, strict=True)):
            cols = lt[:, labels[:, r]].T
            like += cols
            final += w * cols
        prob = np.exp(like) @ cur
        return float(np.dot(prob, gain_of(final)))
    key = repr((seed, sorted((str(w), str(lab)) for w, lab in votes.items()), [str(w) for w in rem]))
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    likely = np.nonzero(cur > 1e-6)[0]
    final = np.broadcast_to(base, (len(likely), samples, K)).copy()
    for lt, w in zip(logs, wts, strict=True):
        cdf = np.cumsum(np.exp(lt[likely]), axis=1)
        u = rng.random((len(likely), samples, 1)) * cdf[:, None, -1:]
        lab = np.minimum((u > cdf[:, None, :]).sum(axis=2), K - 1)
        final += w * lt.T[lab]
    return float(np.dot(cur[likely], gain_of(final).mean(axis=1)) + cur[cur <= 1e-6].sum())


class RefPolicy(AdaptivePolicy):
    """:class:`AdaptivePolicy` with the unoptimised ``value``/``ranked``/``plan``/``gain``/``unsettled``."""

    def value(self, models, attributes):
        ms = [m for m in (models.get(a) for a in attributes) if m is not None and m.classes_]
        out = {}
        for n in self.order:
            c = 1.0 if self.cost == "calls" else max(self.prices[n], 1e-12)
            out[n] = sum(ref_informativeness(m, n) for m in ms) / c
        return out

    def ranked(self, models, attributes):
        v = self.value(models, attributes)
        return self._diversified(sorted(self.order, key=lambda n: (-round(v[n], 9), self.prices[n], n)))

    def plan(self, product_id, models=None, attributes=None):
        if not self.order:
            return []
        if self.explore(product_id):
            return [list(self.order)]
        if models is None or self._explicit is not None:
            return [list(s) for s in self.stages]
        return self._staged(self.ranked(models, list(attributes or ())))

    def gain(self, model, votes, asked=()):
        remaining = [n for n in self.order if n not in votes and n not in asked]
        return ref_expected_gain(model, votes, remaining, samples=self.samples, exact_outcomes=self.exact_outcomes,
                                 seed=self.seed)

    def unsettled(self, models, votes, attributes=None, *, asked=()):
        out = []
        for a in votes if attributes is None else attributes:
            m = models.get(a)
            v = votes.get(a, {})
            if not any(lab is not None for lab in v.values()):
                if self.abstain_limit is None or len(v) < self.abstain_limit:
                    out.append(a)
            elif m is None or not m.classes_ or self.gain(m, v, asked) > self.max_gain:
                out.append(a)
        return out
