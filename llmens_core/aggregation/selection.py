"""The model choice shared by the batch and the online default: the one-standard-error rule on held-out
vote log-likelihood.

Input: for each candidate of :data:`~._bayes.ALL_CANDIDATES`, the sum of its held-out vote log-likelihoods
over ``n`` units (items), and the sums of products of per-unit scores ``m2`` (C, C), from which the standard
error of any paired difference follows. Rule (Breiman et al. 1984, a convention rather than a tuned value):
among the independent candidates take the simplest whose mean score per vote is within one standard error
of the best one's; then two richer versions of it are weighed: on three labels or more the same rule's pick among the
candidates with item difficulty, if it is more than one standard error better than both that choice and its
own twin without difficulty, and the choice's correlated-worker version, if *it* is more than one standard
error better; the better-scoring of those that qualify is taken (correlated workers also look like hard items,
and hard items like correlated workers: the data says which explains the votes). A richer model must therefore explain held-out votes clearly better than a simpler one, which is
what keeps the default close to majority vote (the simplest candidate) when the data cannot support more.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmens_core.aggregation._bayes import (
    ALL_CANDIDATES,
    DIFFICULTY_CANDIDATES,
    INDEPENDENT_CANDIDATES,
    Candidate,
)

__all__ = ["choose", "moments", "richer", "simplest_within", "within_one_se"]


def moments(per_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sums (C,), m2 (C, C))`` of per-unit scores ``per_unit`` (U, C)."""
    return per_unit.sum(axis=0), per_unit.T @ per_unit


def within_one_se(total, m2, n, n_votes, best: int, c: int) -> bool:
    """Is candidate ``c`` within one standard error (per vote) of candidate ``best``? (Yes when nothing was
    scored.)"""
    if n <= 0 or n_votes <= 0:
        return True
    mean_d = (total[best] - total[c]) / n
    var_d = max((m2[best, best] + m2[c, c] - 2.0 * m2[best, c]) / n - mean_d**2, 0.0)
    se = np.sqrt(var_d * n) / n_votes
    rounding = 1e-9 * max(1.0, abs(total[best])) / n_votes  # equal scores summed in another order are a tie
    return (total[best] - total[c]) / n_votes <= se + rounding


def simplest_within(total: np.ndarray, m2: np.ndarray, n_units: float, n_votes: float,
                    allowed: list[int]) -> int:
    """Index of the first of ``allowed`` (listed simplest first) within one standard error of the best of them;
    the first when nothing was scored. ``total`` (C,) and ``m2`` (C, C) as from :func:`moments`."""
    if n_units <= 0 or n_votes <= 0:
        return allowed[0]
    best = max(allowed, key=lambda i: (total[i], -allowed.index(i)))
    return next(i for i in allowed if within_one_se(total, m2, n_units, n_votes, best, i))


def choose(total: np.ndarray, m2: np.ndarray, n_units: float, n_votes: float,
           allowed: tuple[Candidate, ...] = ALL_CANDIDATES) -> Candidate:
    """The candidate the rule picks (see the module docstring); the simplest one when nothing was scored.
    ``total`` (C,) and ``m2`` (C, C) are indexed like :data:`ALL_CANDIDATES`; ``allowed`` restricts the race."""
    idx = {c: i for i, c in enumerate(ALL_CANDIDATES)}
    indep = [c for c in INDEPENDENT_CANDIDATES if c in allowed]
    if not indep:  # a race of dependent candidates only (e.g. a model told its LLMs are correlated)
        indep = [c for c in ALL_CANDIDATES if c in allowed]
    if not indep:
        raise ValueError("no candidate allowed")
    if n_units <= 0 or n_votes <= 0:
        return indep[0]
    chosen = ALL_CANDIDATES[simplest_within(total, m2, n_units, n_votes, [idx[c] for c in indep])]
    dep = Candidate(chosen.structure, chosen.class_prior, True)
    hard = [idx[c] for c in DIFFICULTY_CANDIDATES if c in allowed]
    return ALL_CANDIDATES[richer(total, m2, n_units, n_votes, idx[chosen], hard, lambda i: idx[ALL_CANDIDATES[i].twin],
                                 idx[dep] if dep != chosen and dep in allowed else None)]


def richer(total: np.ndarray, m2: np.ndarray, n_units: float, n_votes: float, base: int, hard: list[int],
           twin: Callable[[int], int], dependent: int | None) -> int:
    """The choice once the richer versions of the independent pick ``base`` are weighed (indices into ``total``
    (C,) and ``m2`` (C, C)): the simplest of ``hard`` (the candidates with difficulty, simplest first) within one
    standard error of their best qualifies when it is more than one standard error better than both ``base`` and
    ``twin(pick)``, its twin without difficulty; ``dependent`` (``base``'s correlated-worker version, or None)
    qualifies when it is more than one standard error better than ``base``. The better-scoring of those that
    qualify, else ``base``. Shared by the batch race and the online criterion, so both make one choice."""
    better = []
    if hard:
        pick = simplest_within(total, m2, n_units, n_votes, hard)
        if not any(within_one_se(total, m2, n_units, n_votes, pick, i) for i in (base, twin(pick))):
            better.append(pick)
    if dependent is not None and not within_one_se(total, m2, n_units, n_votes, dependent, base):
        better.append(dependent)
    return max(better, key=lambda i: total[i]) if better else base
