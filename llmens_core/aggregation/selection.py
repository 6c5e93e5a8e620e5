"""The model choice shared by the batch and the online default: a veto on held-out agreement beyond chance,
then the one-standard-error rule on held-out vote log-likelihood.

Input: for each candidate of :data:`~._bayes.ALL_CANDIDATES`, the sum of its held-out vote log-likelihoods
over ``n`` units (items), and the sums of products of per-unit scores ``m2`` (C, C), from which the standard
error of any paired difference follows; the same for the held-out agreement of its decisions beyond chance
(:func:`._bayes.agreement_beyond_chance`).

Rule. (1) *Veto*: an independent candidate whose agreement beyond chance is more than two standard errors below
the best candidate's is out of the race. Likelihood rewards a model that predicts votes well, and a latent-class
fit can do that while merging classes, so that its decisions are wrong; agreement beyond chance rises with
the decisions' accuracy and needs no gold. It is a biased proxy (systematic confusions pull it towards the
majority's decisions), so it only removes candidates that are clearly worse by it: two standard errors, the
usual one-sided test at about 2.5%, a convention rather than a tuned value. (2) Among the independent
candidates left, take the simplest whose mean score per vote is within one standard error of the best one's
(Breiman et al. 1984, also a convention); then take its correlated-worker version only if *it* is more than
one standard error better. A richer model must therefore explain held-out votes clearly better than a simpler
one, which is what keeps the default close to majority vote (the simplest candidate) when the data cannot
support more.
"""

from __future__ import annotations

import numpy as np

from llmens_core.aggregation._bayes import ALL_CANDIDATES, INDEPENDENT_CANDIDATES, Candidate

__all__ = ["VETO_SE", "choose", "moments", "not_vetoed", "simplest_within", "within_one_se"]

VETO_SE = 2.0
"""How many standard errors below the best agreement beyond chance a candidate is vetoed (see above)."""


def moments(per_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sums (C,), m2 (C, C))`` of per-unit scores ``per_unit`` (U, C)."""
    return per_unit.sum(axis=0), per_unit.T @ per_unit


def within_one_se(total, m2, n, n_votes, best: int, c: int, k: float = 1.0) -> bool:
    """Is candidate ``c`` within ``k`` standard errors (per vote) of candidate ``best``? (Yes when nothing was
    scored.)"""
    if n <= 0 or n_votes <= 0:
        return True
    mean_d = (total[best] - total[c]) / n
    var_d = max((m2[best, best] + m2[c, c] - 2.0 * m2[best, c]) / n - mean_d**2, 0.0)
    se = np.sqrt(var_d * n) / n_votes
    rounding = 1e-9 * max(1.0, abs(total[best])) / n_votes  # equal scores summed in another order are a tie
    return (total[best] - total[c]) / n_votes <= k * se + rounding


def not_vetoed(agree_total: np.ndarray, agree_m2: np.ndarray, n_units: float, n_votes: float,
               allowed: list[int]) -> list[int]:
    """The candidates of ``allowed`` whose agreement beyond chance is within :data:`VETO_SE` standard errors of
    the best of them (all of them when nothing was scored); ``agree_total`` (C,), ``agree_m2`` (C, C)."""
    if n_units <= 0 or n_votes <= 0 or not allowed:
        return list(allowed)
    best = max(allowed, key=lambda i: agree_total[i])
    return [i for i in allowed if within_one_se(agree_total, agree_m2, n_units, n_votes, best, i, VETO_SE)]


def simplest_within(total: np.ndarray, m2: np.ndarray, n_units: float, n_votes: float,
                    allowed: list[int]) -> int:
    """Index of the first of ``allowed`` (listed simplest first) within one standard error of the best of them;
    the first when nothing was scored. ``total`` (C,) and ``m2`` (C, C) as from :func:`moments`."""
    if n_units <= 0 or n_votes <= 0:
        return allowed[0]
    best = max(allowed, key=lambda i: (total[i], -allowed.index(i)))
    return next(i for i in allowed if within_one_se(total, m2, n_units, n_votes, best, i))


def choose(total: np.ndarray, m2: np.ndarray, n_units: float, n_votes: float,
           allowed: tuple[Candidate, ...] = ALL_CANDIDATES,
           agreement: tuple[np.ndarray, np.ndarray] | None = None) -> Candidate:
    """The candidate the rule picks (see the module docstring); the simplest one when nothing was scored.
    ``total`` (C,) and ``m2`` (C, C) are indexed like :data:`ALL_CANDIDATES`, and so are the ``agreement``
    moments ``(sums (C,), m2 (C, C))`` (None: no veto); ``allowed`` restricts the race."""
    idx = {c: i for i, c in enumerate(ALL_CANDIDATES)}
    indep = [c for c in INDEPENDENT_CANDIDATES if c in allowed]
    if not indep:  # a race of dependent candidates only (e.g. a model told its LLMs are correlated)
        indep = [c for c in ALL_CANDIDATES if c in allowed]
    if not indep:
        raise ValueError("no candidate allowed")
    if n_units <= 0 or n_votes <= 0:
        return indep[0]
    race = [idx[c] for c in indep]
    if agreement is not None:
        race = not_vetoed(agreement[0], agreement[1], n_units, n_votes, race)
    chosen = ALL_CANDIDATES[simplest_within(total, m2, n_units, n_votes, race)]
    dep = Candidate(chosen.structure, chosen.class_prior, True)
    if dep != chosen and dep in allowed and not within_one_se(total, m2, n_units, n_votes, idx[dep], idx[chosen]):
        return dep
    return chosen
