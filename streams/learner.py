"""The learner: folds statistics deltas into each attribute's online model and publishes new versions.

It consumes ``ds-stats`` (key = attribute) in its own consumer group, so Kafka's assignment makes
exactly one worker the learner of each attribute partition. It runs on its own consumer rather than as
a faust agent: deltas are a trickle next to product updates, and sharing faust's fetch loop with a
saturated agent delayed them until the product stream went idle (measured: no model update during a
2,000-product run). Offsets are committed only after the new models are delivered (at least once; a
delta folded twice after a crash nudges the running average, it loses nothing).

Besides deltas, ``ds-stats`` carries gold records (``{"attribute", "gold": [...]}``) from the feedback agent:
human-verified items whose statistics the learner computes with the posterior clamped to the gold label.

A delta computed under a cold model carries its votes. While the learner's own model of the attribute is cold
it gathers those votes (:class:`~llmens_core.decisions.ColdStart`) and learns them as one batch, raced like the
batch default's (in a thread: the race takes about a second); once warm, it re-scores such votes under its
current model instead of folding in a stale cold E-step. Votes held when the worker dies are not learnt (the
next cold deltas start the batch again); no decision depends on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from llmens_core.aggregation import SufficientStats
from llmens_core.decisions import ColdStart, Votes
from streams.models import ModelRegistry

log = logging.getLogger("llmens.learner")

__all__ = ["gold_record_stats", "run_learner"]


def gold_record_stats(registry: ModelRegistry, attribute: str, gold: list[dict]) -> SufficientStats:
    """Statistics of a ``gold`` ds-stats record: human-verified items with their posterior clamped to the label.

    A record ``{"attribute": a, "gold": [{"votes": {llm: label}, "label": gold, ...}]}`` is written by the
    feedback agent for each accepted :class:`~llmens_core.events.AttributeFeedback`; the maths is
    :func:`llmens_core.aggregation.clamped_stats`. The gold item is folded in as one more online step,
    like a soft item (its earlier soft contribution is not taken back: it has decayed into the running average).
    """
    items = [(g["votes"], g["label"]) for g in gold]
    return registry.get(attribute).gold_stats(items)


def _record_stats(registry: ModelRegistry, attribute: str, d: dict, cold: ColdStart) -> SufficientStats | None:
    """What one ``ds-stats`` record teaches the attribute's model now; None when its votes are held for the
    cold start."""
    gold = d.get("gold")
    if gold is not None:
        return gold_record_stats(registry, attribute, gold)
    votes = d.get("votes")
    if votes is None:
        return SufficientStats.from_dict(d["stats"])
    model = registry.get(attribute)
    if model.is_cold or attribute in cold:
        cold.add(attribute, votes)
        return None
    return model.batch_stats(*votes)


async def _learn_cold_start(registry: ModelRegistry, attribute: str, votes: Votes) -> SufficientStats:
    """The first step of a cold attribute's model from its gathered votes: the batch race when the LLMs are
    dense (off the event loop), else the E-step."""
    model = registry.get(attribute)
    model.add_workers(dict.fromkeys(votes[1]))
    model.add_classes(dict.fromkeys(votes[2]))
    if model.races_first_batch(*votes):
        return await asyncio.to_thread(model.first_batch_stats, *votes)
    return model.batch_stats(*votes)


async def run_learner(registry: ModelRegistry, bootstrap: str, topic: str, group: str, model_topic: str, *,
                      embedded: bool = False, counters: dict | None = None,
                      on_publish: Callable[[str, dict], None] | None = None,
                      cold_start: ColdStart | None = None) -> None:
    """Consume ``topic`` forever in ``group``; after each poll, publish every changed model to ``model_topic``.

    The learner has its own producer: model versions must not queue behind the decision traffic of
    the worker's main producer.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    cold = cold_start if cold_start is not None else ColdStart()
    counters = counters if counters is not None else {}
    timing = ({"session_timeout_ms": 2000, "heartbeat_interval_ms": 200, "rebalance_timeout_ms": 2000}
              if embedded else {})
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", **timing)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()

    def count(key: str, n: float = 1) -> None:
        counters[key] = counters.get(key, 0) + n

    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            changed: set[str] = set()
            for msgs in batches.values():
                for msg in msgs:
                    try:
                        d = orjson.loads(msg.value)
                        attribute = d["attribute"]
                        stats = _record_stats(registry, attribute, d, cold)
                    except Exception as exc:  # noqa: BLE001 - a malformed delta must not stop learning
                        log.error("ignoring malformed %s record at %d: %s", topic, msg.offset, exc)
                        continue
                    if stats is None:  # held for the cold start, counted as applied when learnt
                        continue
                    registry.get(attribute).apply(stats)
                    changed.add(attribute)
                    if d.get("gold") is None:
                        count("stats_applied")
                    else:
                        count("gold_records_applied")
                        count("gold_items_applied", stats.n_items)
            for attribute in cold.due():
                votes, n_records = cold.take(attribute)
                try:
                    stats = await _learn_cold_start(registry, attribute, votes)
                except Exception as exc:  # noqa: BLE001 - learning goes on from the next deltas
                    log.error("cold start of %s failed on %d votes: %s", attribute, len(votes[0]), exc)
                    count("cold_start_failures")
                    continue
                registry.get(attribute).apply(stats)
                changed.add(attribute)
                count("cold_starts")
                count("stats_applied", n_records)
                log.info("cold start of %s: %d items learnt as one batch (%s)", attribute, int(stats.n_items),
                         registry.get(attribute).candidate_.name)
            if not changed:
                continue
            futures = []
            for attribute in sorted(changed):
                model = registry.get(attribute)
                futures.append(await producer.send(model_topic, key=attribute.encode(), value=model.to_bytes()))
                if on_publish is not None:
                    on_publish(attribute, model.summary())
            for fut in futures:
                await fut  # delivered before the deltas folded into them are committed
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
