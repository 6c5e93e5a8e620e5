"""Aggregation engine: majority vote, IWMV / one-coin, Dawid-Skene, and the default, pure numpy.

All estimators take long-format votes ``fit(items, workers, labels)`` (1-D array-likes of hashables, label
``None`` = abstention) and expose learned parameters as trailing-underscore attributes.

The default (:func:`default_aggregator`, batch; :func:`default_online`, the stream's) is a Bayesian
Dawid-Skene that chooses, per dataset and attribute and without gold, between majority vote's model, one-coin,
full-confusion models and their correlated-worker corrections by held-out vote likelihood (see
:mod:`.auto`, :mod:`.selection`, :mod:`.dependence`). No constant in it was chosen by accuracy.
``METHODS`` maps method names (as in ``llmens evaluate --method``) to factories.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from llmens_core.aggregation._base import Aggregator, NotFittedError
from llmens_core.aggregation._bayes import ALL_CANDIDATES, CANDIDATE_NAMES, Candidate
from llmens_core.aggregation.auto import AutoDawidSkene
from llmens_core.aggregation.dawid_skene import DawidSkene
from llmens_core.aggregation.majority import MajorityVote, WeightedMajorityVote
from llmens_core.aggregation.onecoin import OneCoinDawidSkene
from llmens_core.aggregation.online import ModelParams, OnlineDawidSkene, SufficientStats, clamped_stats

__all__ = [
    "ALL_CANDIDATES",
    "CANDIDATE_NAMES",
    "METHODS",
    "Aggregator",
    "AutoDawidSkene",
    "Candidate",
    "DawidSkene",
    "MajorityVote",
    "ModelParams",
    "NotFittedError",
    "OneCoinDawidSkene",
    "OnlineDawidSkene",
    "SufficientStats",
    "WeightedMajorityVote",
    "clamped_stats",
    "default_aggregator",
    "default_online",
]


def default_aggregator(**kw) -> AutoDawidSkene:
    """The default batch aggregator, :class:`AutoDawidSkene`; ``families`` (a mapping) is a hint only."""
    return AutoDawidSkene(**kw)


def default_online(classes=None, **kw) -> OnlineDawidSkene:
    """The online default (the stream's model): :class:`OnlineDawidSkene` with the same candidates and
    criterion. ``prior_accuracy``/``prior_strength``/``regime`` (settings of the old tuned default) are
    ignored with a warning: the priors are now fitted from the data."""
    legacy = sorted(k for k in ("prior_accuracy", "prior_strength", "regime") if kw.pop(k, None) is not None)
    if legacy:
        warnings.warn(f"{legacy} no longer apply: the default fits its priors from the data", stacklevel=2)
    return OnlineDawidSkene(classes, **kw)


METHODS: dict[str, Callable[..., object]] = {
    "default": default_aggregator,
    "mv": MajorityVote,
    "wmv": lambda **kw: OneCoinDawidSkene(weighting="linear", n_iter=1, **kw),
    "onecoin": OneCoinDawidSkene,
    "ds": lambda **kw: DawidSkene(**{"prior_strength": 0.0, "class_prior_strength": 0.0, **kw}),
    "online": default_online,
}
"""Method name -> factory. ``wmv`` is one round of weighting by agreement with majority vote (linear IWMV
weights); ``ds`` is textbook maximum-likelihood Dawid-Skene; ``online`` is one shuffled pass of
:func:`default_online`."""
