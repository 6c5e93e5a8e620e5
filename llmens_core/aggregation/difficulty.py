"""Item difficulty: on a hard item every worker's votes spread more than its confusion row says.

Dawid-Skene explains each vote by the worker's row for the item's class, and has no place for items that are hard
for everyone: a grade between two grades, a product whose text barely implies the attribute. Their spread votes
are then read as the workers' confusions, the rows of a common class absorb them, and items of a rare class are
pulled into it (seen: a four-grade crowd whose first grade holds 60 % of the items, 40 % of the items hard: textbook
DS 77.6 %, the default 77.9 %, majority vote 84.1 %).

**Model.** Each item is easy (share ``1 - rho``) or hard (share ``rho``). On a hard item, worker ``j``'s row for
class ``k`` is its easy row *tempered*: ``theta[j, k] ** t / sum_l theta[j, k, l] ** t`` with one ``t`` in (0, 1]
per dataset, so every worker is less sure in the same proportion (a two-point version of GLAD's item difficulty,
Whitehill et al., NeurIPS 2009). The hard rows are tied to the easy ones: a free hard matrix, tried first, took
72-83 % of the items, since a population row fits sparse workers better than their own. The latent state is the
pair (class, difficulty): ``2K`` states with tied parameters, so EM, the held-out vote likelihood and the posterior
are Dawid-Skene's on confusions of shape (J, 2K, K) (:func:`latent`).

**M-step** (:func:`m_step`): rows from the easy part of the soft counts, with the structure's empirical-Bayes
prior as for any candidate (:func:`._bayes.confusions`); ``t`` maximises the expected log-likelihood of the hard
part over :data:`TEMPER_GRID`; ``rho`` is the posterior mean of the hard share under Beta(1, 1). A fit with
``t = 1`` has found no difficulty (its hard rows are its easy rows) and is not admitted to the race.

Whether a dataset has hard items is the criterion's to say: the ``+difficulty`` candidates are raced, and taken
only when they predict held-out votes more than one standard error better (:mod:`.selection`).

Shapes: ``J`` workers, ``K`` classes, ``U`` units, ``G`` grid points.
"""

from __future__ import annotations

import numpy as np

from llmens_core.aggregation import _bayes, _em

__all__ = ["START_HARD", "START_TEMPER", "TEMPER_GRID", "classes", "first_posterior", "found", "latent", "m_step",
           "split", "temper"]

TEMPER_GRID = np.linspace(0.05, 1.0, 20)
"""Tempering exponents searched by the M-step, shape (G,): a resolution of 0.05, not a tuned value."""

START_TEMPER, START_HARD = 0.5, 0.3
"""The first E-step's ``t`` and ``rho``. EM needs a start that is not a fixed point: with ``t = 1`` the hard part is a
copy of the easy part, and it stays one. EM moves both from there."""


def temper(theta: np.ndarray, t: float) -> np.ndarray:
    """Rows (last axis) of ``theta`` raised to ``t`` and renormalised, same shape."""
    lt = t * np.log(np.maximum(theta, 1e-300))
    lt -= lt.max(axis=-1, keepdims=True)
    e = np.exp(lt)
    return e / e.sum(axis=-1, keepdims=True)


def found(fitted: _bayes.Fitted) -> bool:
    """Has a fit found hard items (``t < 1``)? A candidate without difficulty never has."""
    return fitted.hard_share > 0.0 and fitted.temper < 1.0


def latent(fitted: _bayes.Fitted) -> tuple[np.ndarray, np.ndarray]:
    """Confusions over the latent states and their prior: ``(theta (J, Z, K), pi (Z,))`` with ``Z = 2K`` (easy
    classes, then hard ones) for a fit with difficulty, else the fit's own ``(theta (J, K, K), pi (K,))``."""
    if fitted.hard_share <= 0.0:
        return fitted.theta, fitted.pi
    rho = fitted.hard_share
    return (np.concatenate([fitted.theta, temper(fitted.theta, fitted.temper)], axis=1),
            np.concatenate([fitted.pi * (1.0 - rho), fitted.pi * rho]))


def classes(T: np.ndarray, n_classes: int) -> np.ndarray:
    """Posteriors over the classes (U, K) from posteriors over the latent states (U, Z)."""
    return T if T.shape[1] == n_classes else T[:, :n_classes] + T[:, n_classes:]


def _hard_loglik(theta: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Expected log-likelihood of the hard counts ``hard`` (J, K, K) under ``theta`` (J, K, K) tempered by each
    exponent of :data:`TEMPER_GRID`, shape (G,)."""
    rows = hard.sum(axis=-1) > 0
    lt = np.log(np.maximum(theta[rows], 1e-300))  # (R, K)
    scaled = TEMPER_GRID[:, None, None] * lt[None]  # (G, R, K)
    m = scaled.max(axis=-1, keepdims=True)
    log_rows = scaled - (m + np.log(np.exp(scaled - m).sum(axis=-1, keepdims=True)))
    return np.einsum("rk,grk->g", hard[rows], log_rows)


def m_step(N: np.ndarray, class_counts: np.ndarray, structure: str, class_prior: str) -> _bayes.Fitted:
    """Parameters from soft counts over the latent states: ``N`` (J, 2K, K), ``class_counts`` (2K,)."""
    K = N.shape[-1]
    easy, hard = N[:, :K], N[:, K:]
    theta, s = _bayes.confusions(easy, structure)
    t = float(TEMPER_GRID[int(np.argmax(_hard_loglik(theta, hard)))]) if hard.sum() > 0 else 1.0
    pi = _bayes.class_prior(class_counts[:K] + class_counts[K:], class_prior)
    rho = float((class_counts[K:].sum() + 1.0) / (class_counts.sum() + 2.0))
    return _bayes.Fitted(theta, pi, s, hard_share=rho, temper=t)


def first_posterior(unit: np.ndarray, wl: np.ndarray, c: np.ndarray | None, T: np.ndarray, mult: np.ndarray,
                    n_workers: int, structure: str, class_prior: str) -> np.ndarray:
    """The first E-step of a fit with difficulty, (U, 2K), from a start ``T`` (U, K) over the classes (e.g. the
    majority vote): rows fitted to all of ``T``'s counts, then ``t`` and ``rho`` at their start."""
    Tm = T * mult[:, None]
    theta, _ = _bayes.confusions(_em.confusion_counts(unit, wl, Tm, n_workers), structure)
    fitted = _bayes.Fitted(theta, _bayes.class_prior(Tm.sum(axis=0), class_prior), 0.0, hard_share=START_HARD,
                           temper=START_TEMPER)
    th, pi = latent(fitted)
    return _em.softmax_rows(_em.log_joint(unit, wl, c, np.log(pi), np.log(th), len(T)))[0]


def split(T: np.ndarray, unit: np.ndarray, wl: np.ndarray, c: np.ndarray | None, fitted: _bayes.Fitted) -> np.ndarray:
    """Posteriors over the latent states (U, 2K) that keep the class posteriors ``T`` (U, K) and share each class
    between easy and hard as ``fitted`` (a fit with difficulty) would given the unit's votes:
    ``T[u, k] P(hard | k, votes)``. The online model's statistics carry this split whatever candidate decides
    (its E-step's class posteriors), so that the ``+difficulty`` candidates have their M-step."""
    K = T.shape[1]
    th, pi = latent(fitted)
    lj = _em.log_joint(unit, wl, c, np.log(pi), np.log(th), len(T))
    hard = 1.0 / (1.0 + np.exp(np.clip(lj[:, :K] - lj[:, K:], -700.0, 700.0)))
    return np.concatenate([T * (1.0 - hard), T * hard], axis=1)
