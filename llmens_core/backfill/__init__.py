"""Backfill: label a whole catalogue through the providers' batch APIs, at their batch price.

:mod:`~llmens_core.backfill.requests` builds the gateway's own requests, :mod:`~llmens_core.backfill.apis` speaks
the batch APIs, :mod:`~llmens_core.backfill.runner` submits, polls and asks failed lines again with its
:mod:`~llmens_core.backfill.state` on disk (resumable), :mod:`~llmens_core.backfill.results` reads each line as
the gateway reads a response, and :mod:`~llmens_core.backfill.decide` fits the models on all votes and decides.
Nothing here knows Kafka: ``llmens backfill`` (streams/cli/backfill.py) publishes the outputs.
"""

from llmens_core.backfill.decide import fit_and_decide
from llmens_core.backfill.requests import BatchRequest, custom_id, plan_requests
from llmens_core.backfill.runner import BackfillOptions, BackfillProgress, run_batches
from llmens_core.backfill.state import BackfillState

__all__ = ["BackfillOptions", "BackfillProgress", "BackfillState", "BatchRequest", "custom_id", "fit_and_decide",
           "plan_requests", "run_batches"]
