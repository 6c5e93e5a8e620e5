"""Aggregation engine: majority vote, IWMV / one-coin, Dawid-Skene, and the default, pure numpy.

All estimators take long-format votes ``fit(items, workers, labels)`` (1-D array-likes of hashables, label
``None`` = abstention) and expose learned parameters as trailing-underscore attributes. The default
(:func:`default_aggregator`, batch; :func:`default_online`, the stream's) is a Bayesian Dawid-Skene that chooses,
per dataset and attribute and without gold, between majority vote's model, one-coin, full-confusion models and
their correlated-worker and item-difficulty versions, by held-out vote likelihood. No constant in it was chosen by
accuracy. ``METHODS`` maps method names (as in ``llmens evaluate --method``) to factories.

The parts, data flowing downwards (each module imports only those above it)::

    _votes, _em, _base       votes as integer codes; vectorised E-step pieces; the fit/predict interface
    majority, onecoin,       the baselines: majority vote (the one tie rule), IWMV, textbook Dawid-Skene
      dawid_skene
    _bayes                   candidates (structure x class prior x dependence x difficulty), their M-steps
                             with empirical-Bayes priors, held-out vote log-likelihood
    dependence, difficulty   correlated workers from residual agreement; hard items (tempered confusions)
    selection                the one-standard-error rule: the choice, shared by batch and online
    batched                  the M-step of many fits at once (the race's folds and starts, side by side)
    auto                     the batch default: cross-validated race of the candidates (AutoDawidSkene)
    _stats                   mergeable sufficient statistics, the stream's deltas (SufficientStats)
    params                   ModelParams, the read-only snapshot a policy predicts with
    model                    StatisticsModel: statistics -> every candidate's parameters -> the choice
    posterior                PosteriorModel: posteriors and E-step statistics (what a deciding worker needs)
    criterion                the online criterion: prequential held-out scores of a new batch
    copies, window, youth    the learner's working memory: copies of items learnt, the revisit window,
                             a young model's votes and its races
    record                   the model's record: bytes in, bytes out, within Kafka's message size
    online                   OnlineDawidSkene: the online learner (steps, partial_fit, gold, races)
    evaluate, offline        scoring against gold (``llmens evaluate``), fitting recorded votes (``llmens fit``)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from llmens_core.aggregation._base import Aggregator, NotFittedError
from llmens_core.aggregation._bayes import ALL_CANDIDATES, CANDIDATE_NAMES, Candidate
from llmens_core.aggregation._stats import SufficientStats, clamped_stats
from llmens_core.aggregation.auto import AutoDawidSkene
from llmens_core.aggregation.dawid_skene import DawidSkene
from llmens_core.aggregation.majority import MajorityVote, WeightedMajorityVote
from llmens_core.aggregation.onecoin import OneCoinDawidSkene
from llmens_core.aggregation.online import OnlineDawidSkene
from llmens_core.aggregation.params import ModelParams

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
