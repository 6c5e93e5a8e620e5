"""The online model's criterion: prequential held-out vote log-likelihood of every candidate on a new batch.

Before a mini-batch is learnt, each candidate predicts every vote of it from the item's other votes, with
parameters that have not seen the item: two-fold cross-validation inside the batch, each half scored after one
online step on the other half. The running sums of these scores feed :func:`.selection.choose`, the one-standard-
error rule the batch default (:class:`~.auto.AutoDawidSkene`) applies to its cross-validated scores, so that the
stream and the batch fit make one choice. Shapes: ``V`` votes, ``U`` units (items), ``C`` candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmens_core.aggregation import _bayes, dependence, difficulty, selection
from llmens_core.aggregation.model import N_CANDIDATES

if TYPE_CHECKING:
    from llmens_core.aggregation.online import OnlineDawidSkene

__all__ = ["batch_criterion", "heldout_scores"]


def heldout_scores(model: OnlineDawidSkene, it, wk, lb, n_items) -> np.ndarray:
    """Per-unit held-out vote log-likelihood of every candidate under ``model``'s current parameters, (U, C), of
    the votes ``it``, ``wk``, ``lb`` (V,). Candidates sharing confusions are scored in one pass; a dependent
    candidate without any dependent cluster scores as its independent twin."""
    per_unit = np.zeros((n_items, N_CANDIDATES))
    col = {c: i for i, c in enumerate(_bayes.ALL_CANDIDATES)}
    dependent = model._clusters.dependent
    groups: dict = {}
    for cand in model._raced():  # a candidate out of the race keeps a zero column: it is never chosen
        groups.setdefault((cand.structure, cand.dependent and dependent, cand.difficulty), []).append(cand)
    dep = (dependence.vote_weights(it, wk, model._clusters), dependence.copy_terms(it, wk, lb, model._clusters))
    for (_, weighted, hard), cands in groups.items():
        twins = [_bayes.Candidate(c.structure, c.class_prior, False, hard) for c in cands]
        priors = list(dict.fromkeys(t.class_prior for t in twins))
        fitted = {t.class_prior: difficulty.latent(model._fitted[t]) for t in twins}
        c, copy = dep if weighted else (None, None)
        lls = _bayes.loo_vote_logliks(it, wk, lb, c, fitted[priors[0]][0],
                                      [fitted[k][1] for k in priors], n_items, copy)
        by_prior = {k: np.bincount(it, weights=ll, minlength=n_items) for k, ll in zip(priors, lls, strict=True)}
        for cand in cands:
            per_unit[:, col[cand]] = by_prior[cand.class_prior]
    return per_unit


def batch_criterion(model: OnlineDawidSkene, icode, wcode, lcode, n_items, T,
                    copies=None) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Held-out scores of a batch of codes (V,) whose class posteriors under ``model`` are ``T`` (n_items, K):
    per-candidate sums (C,), product sums (C, C), votes scored, and the pair agreement counts (2, J, J). Items
    flagged in ``copies`` (n_items,) are learnt from but not scored. The model is left unchanged."""
    half = np.random.default_rng(model.version).permutation(n_items) % 2
    scored = np.bincount(icode, minlength=n_items)[icode] >= 2
    if copies is not None:
        scored &= ~copies[icode]
    per_unit = np.zeros((n_items, N_CANDIDATES))
    snap = model._state()
    for h in (0, 1):
        train = half[icode] != h
        test = ~train & scored
        if not train.any() or not test.any():
            continue
        model._fold(model._stats_from(icode[train], wcode[train], lcode[train], T, n_items))
        per_unit += heldout_scores(model, icode[test], wcode[test], lcode[test], n_items)
        model._restore(snap)
    pairs = dependence.pair_stats(icode, wcode, lcode, len(model.workers_))
    total, m2 = selection.moments(per_unit)
    n_scored = float(sum(((half[icode] == h) & scored).sum() for h in (0, 1) if (half[icode] != h).any()))
    return total, m2, n_scored, pairs.as_array()
