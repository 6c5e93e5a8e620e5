"""The topics llmens reads and writes, and creating the missing ones with the right partition counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["STUDENT_MAX_BYTES", "TopicSpec", "ensure_topics", "replication_config", "topic_specs"]

STUDENT_MAX_BYTES = 32 * 1024 * 1024
"""Largest ``student-model`` record: a student's weights grow with the hashed columns its texts touched (up to
classes x 2 x n_features float32, compressed); the learner's producer and the readers allow as much."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every llmens topic: product-keyed ones share the partition count (the scale-out unit)."""
    t = settings.topics
    durable = replication_config(settings)
    compact = {"cleanup.policy": "compact", **durable}
    by_product = ["product_updates", "llm_votes", "product_attributes", "attribute_review",
                  "attribute_feedback", "dead_letter"]
    specs = [TopicSpec(settings.topic(n), t.partitions, dict(durable)) for n in by_product]
    specs.append(TopicSpec(settings.topic("ds_stats"), t.model_partitions, dict(durable)))
    # Latest model per attribute: compacted on Kafka (the embedded broker accepts but never compacts).
    specs.append(TopicSpec(settings.topic("ds_model"), t.model_partitions, compact))
    # Latest student per attribute (issue 33), compacted likewise.
    specs.append(TopicSpec(settings.topic("student_model"), t.model_partitions,
                           {**compact, "max.message.bytes": str(STUDENT_MAX_BYTES)}))
    return specs


def replication_config(settings: Settings) -> dict[str, str]:
    """``min.insync.replicas`` for replicated topics (table changelogs too): with acks=all a write then
    survives the loss of any one broker. Nothing on a single node, whose broker default is right."""
    if settings.topics.replication <= 1:
        return {}
    return {"min.insync.replicas": str(settings.topics.min_isr())}


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; return the names created. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [s for s in topic_specs(settings) if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, settings.topics.replication, config=s.config) for s in wanted],
        request_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout_s)
            created.append(name)
        except Exception as exc:  # noqa: BLE001 - a concurrent creator wins the race; anything else is fatal
            if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    log.info("created topics: %s", ", ".join(created))
    return created


def commit_start_offsets(settings: Settings, timeout_s: float = 10.0) -> int:
    """Tansu workaround: give every input partition without a committed offset one at its start.

    On Tansu a partition whose group never committed (e.g. its worker was killed before its
    first commit) was seen to stall after a rebalance: the new owner never fetched it. Committing the low
    watermark up front is what ``auto.offset.reset=earliest`` would do anyway. Returns partitions committed.
    """
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic("product_updates")
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": settings.kafka.app_id,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        parts = sorted(md.topics[topic].partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout_s)
        missing = [tp for tp in committed if tp.offset < 0]
        if not missing:
            return 0
        starts = [TopicPartition(topic, tp.partition,
                                 consumer.get_watermark_offsets(tp, timeout=timeout_s)[0]) for tp in missing]
        try:
            consumer.commit(offsets=starts, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - a live group may refuse; its members commit themselves
            log.info("start offsets not committed (%s); the group's members will", exc)
            return 0
        return len(starts)
    finally:
        consumer.close()
