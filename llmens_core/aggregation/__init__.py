"""Aggregation engine: majority vote, IWMV / one-coin, full Dawid-Skene (batch and online), pure numpy.

All estimators take long-format votes ``fit(items, workers, labels)`` (1-D array-likes of hashables, label
``None`` = abstention) and expose learned parameters as trailing-underscore attributes. ``default_aggregator()``
is the one the stream uses; ``METHODS`` maps method names (as in ``llmens evaluate --method``) to factories.
"""

from __future__ import annotations

from collections.abc import Callable

from llmens_core.aggregation._base import Aggregator, NotFittedError
from llmens_core.aggregation._votes import prefix_families
from llmens_core.aggregation.dawid_skene import DawidSkene
from llmens_core.aggregation.majority import MajorityVote, WeightedMajorityVote
from llmens_core.aggregation.onecoin import OneCoinDawidSkene
from llmens_core.aggregation.online import OnlineDawidSkene, SufficientStats, clamped_stats

__all__ = [
    "CROWD_CONFIG",
    "DEFAULT_CONFIG",
    "DefaultAggregator",
    "PANEL_CONFIG",
    "ONLINE_CONFIG",
    "METHODS",
    "Aggregator",
    "DawidSkene",
    "MajorityVote",
    "NotFittedError",
    "OneCoinDawidSkene",
    "OnlineDawidSkene",
    "SufficientStats",
    "WeightedMajorityVote",
    "clamped_stats",
    "default_aggregator",
    "default_online",
    "prefix_families",
]

CROWD_CONFIG: dict = {
    "prior_accuracy": 0.7,
    "prior_strength": 1.0,
    "pooled_prior": "sparse",
    "sparse_strength": 2.0,
    "class_prior": "uniform",
    "families": "auto",
    "family_rho": 1.0,
}
"""Prior for sparse crowds (many workers, each answering a few items; measured on the shared crowd sets):
every worker shrunk towards the population confusion matrix (1 pseudo-count per row) plus
``2 K / sqrt(1 + n_j)`` pseudo-counts towards its own one-coin matrix, and a uniform class prior (the learned
one is confounded with the confusions when items have few answers: web -1.4 points)."""

PANEL_CONFIG: dict = {
    "prior_accuracy": 0.7,
    "prior_strength": 20.0,
    "prior_strength_per_class": 2.0,
    "pooled_prior": "onecoin",
    "class_prior": "learned",
    "class_prior_strength": 1.0,
    "families": "auto",
    "family_rho": 1.0,
}
"""Prior for dense panels (a few LLMs that each answer almost every item: the llmens setting). Each confusion
row carries 2 (K - 1) pseudo-counts centred on the LLM's own one-coin matrix (the LLM-Ensemble model), so rows with
little data (rare or absent classes) stay symmetric and EM cannot invent a "phantom class" from a handful of
items; rows with plenty of data learn a full confusion. The crowd prior's uniform class prior is what lets
phantom classes win on panels: on 5 simulated LLMs over the 2,000 shared products it scored material 0.730
against majority vote 0.988; this prior scores 0.990 (``bench/aggregation.py`` prints the table)."""

DEFAULT_CONFIG = PANEL_CONFIG
"""The prior the stream uses (every LLM is asked about every product)."""

PANEL_DENSITY = 0.5
"""Votes / (items x workers) at or above which :func:`default_aggregator` treats the workers as a panel."""

ONLINE_CONFIG: dict = {"inner_iter": 5}
"""Overrides for :func:`default_online`: one shuffled pass over a crowd set is ~10 mini-batches, so each batch
gets 5 E-steps."""


class DefaultAggregator(DawidSkene):
    """Dawid-Skene whose prior follows the shape of the data: :data:`PANEL_CONFIG` for dense LLM panels,
    :data:`CROWD_CONFIG` for sparse crowds (chosen at ``fit`` by vote density, see :data:`PANEL_DENSITY`).
    ``regime_`` records the choice. Explicit keyword arguments override both configurations."""

    def __init__(self, **overrides):
        self._overrides = dict(overrides)
        super().__init__(**{k: v for k, v in {**PANEL_CONFIG, **overrides}.items()
                            if k != "prior_strength_per_class"})

    def _fit(self, votes) -> None:
        density = len(votes.item) / max(1, votes.n_items * votes.n_workers)
        self.regime_ = "panel" if density >= PANEL_DENSITY else "crowd"
        cfg = {**(PANEL_CONFIG if self.regime_ == "panel" else CROWD_CONFIG), **self._overrides}
        for key in ("prior_accuracy", "prior_strength", "pooled_prior", "class_prior", "class_prior_strength",
                    "sparse_strength", "family_rho"):
            if key in cfg:
                setattr(self, key, cfg[key])
        if cfg.get("prior_strength_per_class"):
            self.prior_strength = cfg["prior_strength_per_class"] * max(1, votes.n_classes - 1)
        if self.regime_ == "crowd" and "class_prior_strength" not in self._overrides:
            self.class_prior_strength = 1.0
        super()._fit(votes)


def default_aggregator(**kw) -> DawidSkene:
    """The default batch aggregator: Dawid-Skene with a data-shaped Dirichlet prior and family pooling.

    ``families="auto"`` pools workers whose names share the part before ``|`` (several runs of one base model);
    pass a mapping worker -> family, or ``None`` for independent workers. Keyword arguments override the
    configurations of :class:`DefaultAggregator`.
    """
    return DefaultAggregator(**kw)


def default_online(classes=None, *, regime: str = "panel", **kw) -> OnlineDawidSkene:
    """The online version of the default aggregator; ``regime`` "panel" (the stream) or "crowd"."""
    base = PANEL_CONFIG if regime == "panel" else CROWD_CONFIG
    cfg = {**base, **ONLINE_CONFIG, **kw}
    if regime == "crowd":
        cfg.setdefault("prior_strength", 2.0)
        cfg["prior_strength"] = kw.get("prior_strength", 2.0)
    return OnlineDawidSkene(classes, **cfg)


METHODS: dict[str, Callable[..., object]] = {
    "default": default_aggregator,
    "mv": MajorityVote,
    "wmv": lambda **kw: OneCoinDawidSkene(weighting="linear", n_iter=1, **kw),
    "onecoin": OneCoinDawidSkene,
    "ds": lambda **kw: DawidSkene(**{"prior_strength": 0.0, "class_prior_strength": 0.0, **kw}),
    "online": default_online,
}
"""Method name -> factory. ``wmv`` is one round of weighting by agreement with majority vote (linear IWMV
weights); ``ds`` is textbook maximum-likelihood Dawid-Skene without family pooling; ``online`` is one shuffled
pass of :func:`default_online`."""
