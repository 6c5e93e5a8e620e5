"""The learner: folds statistics deltas into each attribute's online model and publishes new versions.

It consumes ``ds-stats`` (key = attribute) in its own consumer group, so Kafka's assignment makes
exactly one worker the learner of each attribute partition. It runs on its own consumer rather than as
a faust agent: deltas are a trickle next to product updates, and sharing faust's fetch loop with a
saturated agent delayed them until the product stream went idle (measured: no model update during a
2,000-product run). Offsets are committed only after the new models are delivered (at least once; a
delta folded twice after a crash nudges the running average, it loses nothing).

Besides deltas, ``ds-stats`` carries gold records (``{"attribute", "gold": [...]}``) from the feedback agent:
human-verified items whose statistics the learner computes with the posterior clamped to the gold label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from llmens_core.aggregation import SufficientStats
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


async def run_learner(registry: ModelRegistry, bootstrap: str, topic: str, group: str, model_topic: str, *,
                      embedded: bool = False, counters: dict | None = None,
                      on_publish: Callable[[str, dict], None] | None = None) -> None:
    """Consume ``topic`` forever in ``group``; after each poll, publish every changed model to ``model_topic``.

    The learner has its own producer: model versions must not queue behind the decision traffic of
    the worker's main producer.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    timing = ({"session_timeout_ms": 2000, "heartbeat_interval_ms": 200, "rebalance_timeout_ms": 2000}
              if embedded else {})
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", **timing)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batches:
                continue
            changed: set[str] = set()
            for msgs in batches.values():
                for msg in msgs:
                    try:
                        d = orjson.loads(msg.value)
                        attribute = d["attribute"]
                        gold = d.get("gold")
                        stats = (gold_record_stats(registry, attribute, gold) if gold is not None
                                 else SufficientStats.from_dict(d["stats"]))
                    except Exception as exc:  # noqa: BLE001 - a malformed delta must not stop learning
                        log.error("ignoring malformed %s record at %d: %s", topic, msg.offset, exc)
                        continue
                    registry.get(attribute).apply(stats)
                    changed.add(attribute)
                    if counters is not None:
                        key = "stats_applied" if gold is None else "gold_records_applied"
                        counters[key] = counters.get(key, 0) + 1
                        if gold is not None:
                            counters["gold_items_applied"] = counters.get("gold_items_applied", 0) + stats.n_items
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
