"""The read-only snapshot of an online model's parameters: what a policy needs to predict and value a vote."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelParams", "frozen"]


def frozen(a: np.ndarray) -> np.ndarray:
    """A float copy of ``a`` that cannot be written."""
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ModelParams:
    """Read-only snapshot of an :class:`OnlineDawidSkene` at one state (what a policy needs to predict).

    Attributes:
        version: the model's ``version`` when the snapshot was taken.
        workers (J names), classes (K names): tuples.
        log_theta: (J, K, K) log confusion ``[worker, true, given]`` of the chosen candidate (with item difficulty:
            its easy and hard rows mixed by the hard share, a product-form approximation for value-of-information
            computations; :meth:`OnlineDawidSkene.posterior` uses the mixture itself).
        log_pi: (K,) log class prior.
        prior_log_theta: (K, K) log confusion an unknown worker gets (the weak prior).
        cluster: (J,) int cluster of each worker; rho: (C,) its dependence strength (0 = independent).
        candidate: name of the chosen candidate.
    Arrays are not writeable. Equality and hashing are by identity (a snapshot is a key for caches of values
    derived from it).
    """

    version: int
    workers: tuple
    classes: tuple
    log_theta: np.ndarray
    log_pi: np.ndarray
    prior_log_theta: np.ndarray
    cluster: np.ndarray
    rho: np.ndarray
    candidate: str

    def index(self, worker: Hashable) -> int | None:
        """Position of ``worker`` in ``workers`` (None if unknown)."""
        return self._widx.get(worker)

    def label_index(self, label: Hashable) -> int | None:
        return self._cidx.get(label)

    def log_rows(self, worker: Hashable) -> np.ndarray:
        """(K, K) log confusion of ``worker`` (the prior for an unknown one)."""
        j = self.index(worker)
        return self.prior_log_theta if j is None else self.log_theta[j]

    def vote_weights(self, voters: Sequence[Hashable]) -> np.ndarray:
        """Posterior weight of each of ``voters`` (all voting on one item), shape (n,): ``1 / (1 + rho (m - 1))``
        with ``m`` the voters of the same cluster (unknown workers are independent)."""
        code = [(self.cluster[j] if j is not None else ("new", w)) for w, j in ((w, self.index(w)) for w in voters)]
        out = np.ones(len(voters))
        if not len(self.rho) or float(self.rho.max()) == 0.0:
            return out
        counts: dict = {}
        for g in code:
            counts[g] = counts.get(g, 0) + 1
        for i, g in enumerate(code):
            if not isinstance(g, tuple) and counts[g] > 1:
                out[i] = 1.0 / (1.0 + self.rho[g] * (counts[g] - 1))
        return out

    def __post_init__(self):
        object.__setattr__(self, "_widx", {w: j for j, w in enumerate(self.workers)})
        object.__setattr__(self, "_cidx", {c: k for k, c in enumerate(self.classes)})

