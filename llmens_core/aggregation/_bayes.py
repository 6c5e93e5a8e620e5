"""Bayesian Dawid-Skene M-steps and the held-out vote likelihood that chooses between them.

Three nested structures for the confusion matrices, from the fewest parameters to the most:

- ``pooled``: one accuracy shared by every worker, errors spread evenly (the probabilistic model behind
  majority vote: its decision is the majority, the class prior breaking near-ties);
- ``onecoin``: one accuracy per worker (errors spread evenly), shrunk towards the pooled accuracy by a Beta
  prior whose concentration is fitted by empirical Bayes (beta-binomial evidence of the soft counts);
- ``full``: a confusion matrix per worker, each row shrunk towards the worker's own one-coin row by a
  Dirichlet prior whose concentration is fitted the same way (Dirichlet-multinomial evidence);
- ``shared``: a confusion matrix per worker, each row shrunk towards the population's confusion row (errors
  that every worker tends to make, e.g. a rare class that most workers miss), concentration fitted the same
  way. Binary labels only (:func:`candidates_for`).

The only fixed prior is the weak one every structure starts from: Dirichlet ``1 + [k == l]`` per confusion
row (one pseudo-count per cell plus one on the diagonal: "better than chance" by the least possible amount,
so a model with no data is majority vote) and Dirichlet ``1`` on the class prior. No number here was chosen
by looking at accuracy.

Shapes: ``J`` workers, ``K`` classes, ``U`` units (items or vote patterns), ``V`` votes, ``G`` grid points.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from llmens_core.aggregation import _em

STRUCTURES = ("pooled", "onecoin", "full", "shared")
"""Candidate confusion structures, simplest first (ties in the selection criterion go to the simpler)."""

CLASS_PRIORS = ("uniform", "learned")
"""Class prior of a candidate: fixed ``1/K`` (fewer parameters, listed first) or learned (Dirichlet 1). When
items have few votes a learned prior is confounded with the confusions; the criterion decides."""

CONCENTRATION_GRID = np.geomspace(0.25, 4096.0, 29)
"""Prior concentrations (pseudo-counts per row) searched by the empirical-Bayes evidence, shape (G,).
A log grid wide enough that the evidence peaks inside it; its spacing (factor sqrt(2)) is a resolution, not
a tuned value."""


@dataclass(frozen=True, order=True)
class Candidate:
    """One model in the race: a confusion ``structure``, a ``class_prior``, whether correlated workers are
    down-weighted (``dependent``, see :mod:`.dependence`) and whether items may be hard (``difficulty``, see
    :mod:`.difficulty`)."""

    structure: str
    class_prior: str = "uniform"
    dependent: bool = False
    difficulty: bool = False

    @property
    def name(self) -> str:
        return self.structure + ("" if self.class_prior == "uniform" else "+class-prior") + (
            "+dependence" if self.dependent else "") + ("+difficulty" if self.difficulty else "")

    @property
    def twin(self) -> Candidate:
        """The same structure and class prior, independent and without difficulty."""
        return Candidate(self.structure, self.class_prior)

    @classmethod
    def parse(cls, name: str) -> Candidate:
        parts = name.split("+")
        return cls(parts[0], "learned" if "class-prior" in parts else "uniform", "dependence" in parts,
                   "difficulty" in parts)


INDEPENDENT_CANDIDATES = tuple(Candidate(s, c) for s, c in (
    ("pooled", "uniform"), ("pooled", "learned"), ("onecoin", "uniform"), ("onecoin", "learned"),
    ("full", "uniform"), ("shared", "uniform"), ("full", "learned"), ("shared", "learned")))
"""Every independent candidate, by number of parameters (1, 1 + (K - 1), J, ..., J K (K - 1) + (K - 1))."""


def candidates_for(candidates: Iterable[Candidate], n_classes: int) -> tuple[Candidate, ...]:
    """The candidates of ``candidates`` that are raced on ``n_classes`` labels: ``shared`` only when they are
    binary, ``+difficulty`` only when they are not (all of them when none would be left).

    With three labels or more, the population rows of ``shared`` are free to make a latent class a bin for the
    hard items of its neighbours: a class whose row is spread over the labels around it, holding the items whose
    votes are spread. That explains held-out votes better than the true classes do, since items differ in
    difficulty and Dawid-Skene has no other place for it, and it decides worse than majority vote. Seen on
    real votes: 256 web items (five relevance grades), learned prior 0.012 for a grade with 15 % of the votes,
    55.1 % against majority vote's 77.3 %; on simulated five-grade crowds whose hard items (a third to 60 %)
    get spread votes, 11 of 18 worlds of 256-2,000 items ended below majority vote or textbook DS, by up to
    6.4 points, always with ``shared``. ``full`` shrinks each worker towards its own one-coin row, which cannot
    hold such a bin. Two labels have no neighbours on both sides, and there ``shared``'s population rows carry
    the asymmetric errors of a rare class (sparse crowds with 12 % positives: within 0.7 point of majority
    vote with it, up to 1.8 points below without).

    Item difficulty (:mod:`.difficulty`) is what the bin stood for, and it is raced where labels have neighbours.
    With two labels a hard item's votes can only split: tempering scales every vote's log-odds alike, so the
    fit changes decisions only through rows re-estimated on the easy items (bluebird, 39 workers on 108 binary
    items: 88.0 % against 89.8 % without, the fit's held-out gain notwithstanding)."""
    candidates = tuple(candidates)
    if n_classes <= 2:
        return tuple(c for c in candidates if not c.difficulty) or candidates
    return tuple(c for c in candidates if c.structure != "shared") or candidates


@dataclass(frozen=True)
class Fitted:
    """Parameters of one candidate: ``theta`` (J, K, K) [worker, true, given], ``pi`` (K,), the fitted prior
    concentration ``concentration`` (0 for ``pooled``), and for a candidate with difficulty the share of hard
    items ``hard_share`` and their tempering ``temper`` (:mod:`.difficulty`; 0 and 1 without)."""

    theta: np.ndarray
    pi: np.ndarray
    concentration: float
    hard_share: float = 0.0
    temper: float = 1.0


def _symmetric(p: np.ndarray, K: int) -> np.ndarray:
    """One-coin matrices from accuracies ``p`` (J,): shape (J, K, K)."""
    if K == 1:
        return np.ones((len(p), 1, 1))
    out = np.empty((len(p), K, K))
    out[:] = ((1.0 - p) / (K - 1))[:, None, None]
    out.reshape(len(p), K * K)[:, :: K + 1] = p[:, None]
    return out


def pooled_accuracy(N: np.ndarray) -> float:
    """Shared accuracy under the weak prior (Beta(2, K - 1) from Dirichlet ``1 + [k == l]``), from soft counts
    ``N`` (J, K, K)."""
    K = N.shape[-1]
    return float((np.einsum("jkk->", N) + 2.0) / (N.sum() + K + 1.0))


_GAMMALN_GRID = gammaln(CONCENTRATION_GRID)


def _beta_binomial_evidence(succ: np.ndarray, n: np.ndarray, mean: float, at: np.ndarray) -> np.ndarray:
    """log evidence per concentration ``CONCENTRATION_GRID[at]`` (G',), shape (G',), of successes ``succ`` out of
    ``n`` (both (J,)) under Beta(m mean, m (1 - mean)); the binomial coefficients (the same for every m) are left
    out."""
    m = CONCENTRATION_GRID[at][:, None]
    a, b = m * mean, m * (1.0 - mean)
    return (gammaln(succ + a) + gammaln(n - succ + b) - gammaln(n + m) - gammaln(a) - gammaln(b)
            + _GAMMALN_GRID[at][:, None]).sum(axis=1)


def onecoin_accuracy(N: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-worker accuracies (J,) shrunk towards the pooled one by an empirical-Bayes Beta prior, and its
    concentration (the grid point of highest beta-binomial evidence)."""
    tr = np.einsum("jkk->j", N)
    n = N.sum(axis=(1, 2))
    mean = min(max(pooled_accuracy(N), 1e-6), 1.0 - 1e-6)
    m = _best_concentration(lambda at: _beta_binomial_evidence(tr, n, mean, at))
    return (tr + m * mean) / (n + m), m


def _dirichlet_evidence(N: np.ndarray, centre: np.ndarray, at: np.ndarray) -> np.ndarray:
    """log Dirichlet-multinomial evidence per concentration ``CONCENTRATION_GRID[at]`` (G',), shape (G',), of the
    rows of ``N`` (R, K) under Dirichlet(s centre) (``centre`` (R, K), rows summing to 1). A cell without counts
    adds ``gammaln(a) - gammaln(a) = 0``: only the cells with counts are evaluated (the sums are the same)."""
    s = CONCENTRATION_GRID[at][:, None]
    n = N.sum(axis=-1)
    has = N > 0
    if has.mean() > 0.5:  # gathering the cells would cost more than it saves
        a = s[..., None] * np.maximum(centre, 1e-12)
        cells = gammaln(N + a) - gammaln(a)
    else:
        cells = np.zeros((len(at),) + N.shape)
        a = s * np.maximum(centre[has], 1e-12)
        cells[:, has] = gammaln(N[has] + a) - gammaln(a)
    per_row = _GAMMALN_GRID[at][:, None] - gammaln(s + n) + cells.sum(axis=-1)
    return per_row.sum(axis=1)


_COARSE = np.arange(0, len(CONCENTRATION_GRID), 4)


def _best_concentration(evidence) -> float:
    """Grid point of highest ``evidence(indices into CONCENTRATION_GRID) -> (G',)``: every fourth point, then the
    neighbours of the best (the evidence is unimodal in the concentration in practice; this finds the grid maximum
    at 1/2 the cost)."""
    coarse = evidence(_COARSE)
    best = int(np.argmax(coarse))
    i = int(_COARSE[best])
    lo, hi = max(0, i - 3), min(len(CONCENTRATION_GRID), i + 4)
    fine = np.empty(hi - lo)
    others = np.r_[lo:i, i + 1:hi]
    fine[others - lo] = evidence(others)
    fine[i - lo] = coarse[best]
    return float(CONCENTRATION_GRID[lo + int(np.argmax(fine))])


def confusions(N: np.ndarray, structure: str) -> tuple[np.ndarray, float]:
    """Posterior-mean confusions (J, K, K) of ``structure`` from soft counts ``N`` (J, K, K), and the fitted
    prior concentration (0 for ``pooled``)."""
    J, K, _ = N.shape
    if structure == "pooled":
        return _symmetric(np.full(J, pooled_accuracy(N)), K), 0.0
    if structure == "shared":
        weak = _symmetric(np.array([2.0 / (K + 1.0)]), K)[0] * (K + 1.0)
        centre = np.broadcast_to(_em.normalise_rows(N.sum(axis=0) + weak), N.shape)
    elif structure in ("onecoin", "full"):
        p, m = onecoin_accuracy(N)
        centre = _symmetric(p, K)
        if structure == "onecoin":
            return centre, m
    else:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    rows = N.sum(axis=-1) > 0  # rows without counts have evidence 0 whatever the concentration
    if rows.any():
        Nr, cr = N[rows], centre[rows]
        s = _best_concentration(lambda at: _dirichlet_evidence(Nr, cr, at))
    else:
        s = 1.0
    return _em.normalise_rows(N + s * centre), s


def class_prior(class_counts: np.ndarray, kind: str) -> np.ndarray:
    """Class prior (K,): uniform, or the posterior mean under Dirichlet 1."""
    if kind == "uniform":
        return np.full(len(class_counts), 1.0 / len(class_counts))
    if kind == "learned":
        return _em.normalise_rows(class_counts + 1.0)
    raise ValueError(f"class_prior must be one of {CLASS_PRIORS}, got {kind!r}")


def m_step(N: np.ndarray, class_counts: np.ndarray, structure: str, kind: str = "learned") -> Fitted:
    """Posterior-mean parameters of one candidate from soft confusion counts ``N`` (J, K, K) and soft class
    counts (K,)."""
    theta, s = confusions(N, structure)
    return Fitted(theta, class_prior(class_counts, kind), s)


def phantom_classes(theta: np.ndarray, N: np.ndarray) -> np.ndarray:
    """Classes a fit has not tied to their name, shape (K,) bool: class ``k`` holds at least one vote (soft
    counts ``N`` (J, K, K)), yet on its items neither the workers on average (their vote-weighted mean
    confusion row, from ``theta`` (J, K, K) [worker, true, given]) nor any single worker (its counts) answer
    ``k`` more often than any other label.

    A latent class is "k" only because workers say "k" on it; when none does, the fit has turned a class into
    a copy of another (seen: a "none" class whose items every LLM called "reusable", 0.76 accuracy where
    majority vote had 0.95), so its labels mean nothing. The average is the usual Dawid-Skene assumption
    (diagonal dominance, e.g. Zhang et al., NeurIPS 2014); one naming worker is also enough, since the
    ensemble's promise is that a reliable minority can be right against a biased majority (seen: one of three
    local LLMs right on 92% of gender items, the other two answering "unisex" on most)."""
    K = theta.shape[1]
    if K < 2:
        return np.zeros(K, dtype=bool)
    other = ~np.eye(K, dtype=bool)
    votes = N.sum(axis=2)  # (J, K) votes per worker on the items of each class
    tot = votes.sum(axis=0)
    mean_row = np.einsum("jk,jkl->kl", votes, theta) / np.maximum(tot, 1e-300)[:, None]
    average_names = np.diagonal(mean_row) >= np.where(other, mean_row, -np.inf).max(axis=1)
    worker_names = (np.einsum("jkk->jk", N) > np.where(other[None], N, -np.inf).max(axis=2)).any(axis=0)
    return (tot >= 1.0) & ~average_names & ~worker_names


def identifiable(theta: np.ndarray, N: np.ndarray) -> bool:
    """True when :func:`phantom_classes` finds none: the candidate race admits only such fits."""
    return not phantom_classes(theta, N).any()


def m_step_all(N: np.ndarray, class_counts: np.ndarray, candidates) -> dict[Candidate, Fitted]:
    """:func:`m_step` of every independent candidate in ``candidates`` (confusions computed once per structure)."""
    out: dict[Candidate, Fitted] = {}
    by_structure: dict[str, tuple[np.ndarray, float]] = {}
    for c in candidates:
        key = Candidate(c.structure, c.class_prior)
        if key not in out:
            if c.structure not in by_structure:
                by_structure[c.structure] = confusions(N, c.structure)
            theta, s = by_structure[c.structure]
            out[key] = Fitted(theta, class_prior(class_counts, c.class_prior), s)
    return out


def loo_vote_loglik(
    unit: np.ndarray, worker: np.ndarray, label: np.ndarray, c: np.ndarray | None,
    theta: np.ndarray, pi: np.ndarray, n_units: int, copy: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """log P(each vote | the other votes on its unit), shape (V,): the vote is hidden, the unit's posterior is
    computed from the others, and the vote is predicted from that posterior and the worker's confusion.

    ``c`` (V,) are the votes' weights in the posterior (None = 1). ``copy`` = ``(rho_v (V,), share_v (V,))``:
    with probability ``rho_v`` the vote copies a cluster mate (``share_v`` = share of the vote's label among its
    cluster mates' votes on the unit), else it is drawn from the confusion (see :mod:`.dependence`).
    """
    return loo_vote_logliks(unit, worker, label, c, theta, [pi], n_units, copy)[0]


def loo_vote_logliks(unit, worker, label, c, theta, pis, n_units, copy=None) -> list[np.ndarray]:
    """:func:`loo_vote_loglik` for several class priors ``pis`` sharing the confusions (one pass over votes)."""
    if not len(unit):
        return [np.zeros(0) for _ in pis]
    K = theta.shape[-1]
    log_theta = np.log(np.maximum(theta, 1e-300))
    lj = _em.log_joint(unit, worker * K + label, c, np.zeros(theta.shape[1]), log_theta, n_units)
    own = log_theta[worker, :, label]  # (V, K)
    base = lj[unit] - (own if c is None else own * c[:, None])
    rows = theta[worker, :, label]
    out = []
    for pi in pis:
        post, _ = _em.softmax_rows(base + np.log(pi)[None, :])
        p = np.einsum("vk,vk->v", post, rows)
        if copy is not None:
            rho, share = copy
            p = rho * share + (1.0 - rho) * p
        out.append(np.log(np.maximum(p, 1e-300)))
    return out


DIFFICULTY_CANDIDATES = tuple(Candidate(c.structure, c.class_prior, False, True)
                              for c in INDEPENDENT_CANDIDATES if c.structure != "shared")
"""The independent candidates raced on three labels or more, with item difficulty (:mod:`.difficulty`)."""

ALL_CANDIDATES = INDEPENDENT_CANDIDATES + tuple(
    Candidate(c.structure, c.class_prior, True) for c in INDEPENDENT_CANDIDATES) + DIFFICULTY_CANDIDATES
"""The independent candidates, the same with the correlated-worker correction, then those with difficulty."""

CANDIDATE_NAMES = tuple(c.name for c in ALL_CANDIDATES)
