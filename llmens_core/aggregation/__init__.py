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
from llmens_core.aggregation.online import OnlineDawidSkene, SufficientStats

__all__ = [
    "DEFAULT_CONFIG",
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
    "default_aggregator",
    "default_online",
    "prefix_families",
]

DEFAULT_CONFIG: dict = {
    "prior_accuracy": 0.7,
    "prior_strength": 1.0,
    "pooled_prior": "sparse",
    "sparse_strength": 2.0,
    "class_prior": "uniform",
    "families": "auto",
    "family_rho": 1.0,
}
"""Settings of the default aggregator (see ``bench/aggregation.py`` for the measurements): every worker shrunk
towards the population confusion matrix (1 pseudo-count per row) plus ``2 K / sqrt(1 + n_j)`` pseudo-counts
towards its own one-coin matrix (sparse workers learn one accuracy, dense ones a full confusion), a uniform class
prior (the learned one is confounded with the confusions when items have few answers: web -1.4 points), and
family pooling of names sharing the part before ``|``. Robust neighbourhood measured on the shared crowd and LLM
sets: prior_strength 1-2, sparse_strength 1-2."""

ONLINE_CONFIG: dict = {"prior_strength": 2.0, "inner_iter": 5}
"""Overrides of :data:`DEFAULT_CONFIG` for :func:`default_online`: one shuffled pass is ~10 mini-batches on the
crowd sets, so each batch gets 5 E-steps and the prior is a little stronger while counts are few."""


def default_aggregator(**kw) -> DawidSkene:
    """The default batch aggregator: Dawid-Skene with an empirical-Bayes Dirichlet prior and family pooling.

    ``families="auto"`` pools workers whose names share the part before ``|`` (several runs of one base model);
    pass a mapping worker -> family, or ``None`` for independent workers. Keyword arguments override
    :data:`DEFAULT_CONFIG` and go to :class:`DawidSkene`.
    """
    return DawidSkene(**{**DEFAULT_CONFIG, **kw})


def default_online(classes=None, **kw) -> OnlineDawidSkene:
    """The online version of the default aggregator (same prior and family pooling)."""
    cfg = {**DEFAULT_CONFIG, **ONLINE_CONFIG, **kw}
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
