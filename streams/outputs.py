"""The topics a worker writes, behind one object: decisions, review, votes, dead letters, statistics.

Every send counts in the worker's metrics here, so the decider and the feedback agent only say *what* to
write. The channels are faust topics in the worker and faust channels in the in-process tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from llmens_core.events import AttributeDecision, DeadLetter, LabelVote
from streams.metrics import WorkerMetrics

log = logging.getLogger("llmens.worker")

__all__ = ["DEAD_LETTER_KEEP_BYTES", "OutputChannels", "Outputs"]

DEAD_LETTER_KEEP_BYTES = 256 * 1024
"""Head of an oversized input kept in its dead letter (base64 grows it by a third; Kafka's limit is 1 MiB)."""


@dataclass(frozen=True)
class OutputChannels:
    """Where each kind of output goes (faust topics or channels; anything with ``async send``)."""

    decisions: Any
    review: Any
    votes: Any
    dead_letter: Any
    stats: Any


def _name(channel: Any) -> str:
    get = getattr(channel, "get_topic_name", None)
    try:
        return get() if get else str(channel)
    except Exception:  # noqa: BLE001 - a faust channel has no topic name
        return str(channel)


class Outputs:
    """Writes a worker's outputs; ``review_below`` routes low-confidence decisions to review as well."""

    def __init__(self, channels: OutputChannels, metrics: WorkerMetrics, counters: dict[str, float],
                 review_below: float) -> None:
        self.channels = channels
        self.metrics = metrics
        self.counters = counters
        self.review_below = review_below
        self._sent = {field: metrics.events_out.labels(_name(getattr(channels, field)))
                      for field in ("decisions", "review", "votes", "dead_letter", "stats")}

    async def dead_letter(self, raw_value: bytes | None, reason: str, msg: Any, kind: str = "invalid") -> None:
        """Dead-letter the input ``msg`` with ``reason`` (an oversized input keeps its head only)."""
        self.counters["dead_letters"] += 1
        self.metrics.dead_letters.labels(kind).inc()
        dl = DeadLetter.wrap(raw_value, reason, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             key=msg.key, keep_bytes=DEAD_LETTER_KEEP_BYTES)
        await self.channels.dead_letter.send(key=msg.key, value=dl.to_bytes())
        self._sent["dead_letter"].inc()
        log.warning("dead-letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)

    async def decision(self, decision: AttributeDecision) -> None:
        """Emit one decision (and to review when below the threshold)."""
        body, key = decision.to_bytes(), decision.product_id.encode()
        await self.channels.decisions.send(key=key, value=body)
        self._sent["decisions"].inc()
        if decision.confidence < self.review_below:
            await self.channels.review.send(key=key, value=body)
            self._sent["review"].inc()
        self.counters["decisions"] += 1
        self.metrics.observe_decision(decision)

    async def votes(self, product_id: str, votes: list[LabelVote]) -> None:
        """One ``llm-votes`` record with every vote of a product version."""
        value = orjson.dumps([v.model_dump(mode="json") for v in votes])
        await self.channels.votes.send(key=product_id.encode(), value=value)
        self._sent["votes"].inc()

    async def stats(self, attribute: str, record: dict) -> None:
        """One ``ds-stats`` record (a flush's votes or gold items) for the attribute's learner."""
        await self.channels.stats.send(key=attribute.encode(), value=orjson.dumps({"attribute": attribute, **record}))
        self._sent["stats"].inc()
