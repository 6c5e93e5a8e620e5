"""End offsets that are right on Apache Kafka and on Tansu: the one home of this logic.

Tansu answers ListOffsets(latest) with the base offset of the last record batch + 1, not the log end; its
fetch responses carry the right high watermark. Both functions below therefore ask ListOffsets first, fetch
one record before the reported end of each partition, and take the larger of the reported end and the fetch
response's high watermark. On Apache Kafka both numbers agree; the probe costs one small fetch per partition.
:func:`end_offsets` is synchronous (librdkafka: CLI, lag monitor, harness); :func:`fetched_end_offsets` is
async (aiokafka: faust's consumer thread and the model reader), so it never blocks an event loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

__all__ = ["client_config", "end_offsets", "fetched_end_offsets"]

PROBE_GROUP = "llmens-lag-probe"
"""group.id of the sync probe consumer; it never subscribes or commits, so it never joins or shows as a group."""


def client_config(bootstrap: str, extra: dict | None = None) -> dict:
    """librdkafka settings for ``bootstrap``: quiet logs, then ``extra``."""
    conf = {"bootstrap.servers": bootstrap, "log_level": 3}
    conf.update(extra or {})
    return conf


def end_offsets(
    bootstrap: str,
    partitions: Iterable[tuple[str, int]],
    *,
    timeout: float = 10.0,
    config: dict | None = None,
    with_source: bool = False,
) -> dict[tuple[str, int], int] | dict[tuple[str, int], tuple[int, int, str]]:
    """Log end offsets that are right on Tansu and on Apache Kafka (see the module docstring).

    Returns ``{(topic, partition): end}``, or with ``with_source`` ``{(topic, partition): (low, end, source)}``.
    """
    from confluent_kafka import Consumer, TopicPartition

    parts = sorted(set(partitions))
    if not parts:
        return {}
    consumer = Consumer(
        client_config(
            bootstrap,
            {
                "group.id": PROBE_GROUP,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_uncommitted",  # high watermark, like kafka_exporter (not the LSO)
                "fetch.wait.max.ms": 10,
                "fetch.max.bytes": 1 << 20,
                "max.partition.fetch.bytes": 1 << 16,
                "queued.min.messages": 1,
                "enable.partition.eof": True,
                **(config or {}),
            },
        )
    )
    try:
        deadline = time.monotonic() + timeout
        reported: dict[tuple[str, int], tuple[int, int]] = {}
        for t, p in parts:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=max(0.1, deadline - time.monotonic()))
            reported[(t, p)] = (lo, hi)
        consumer.assign([TopicPartition(t, p, max(hi - 1, lo, 0)) for (t, p), (lo, hi) in reported.items()])
        fetched: dict[tuple[str, int], int] = {}
        while len(fetched) < len(parts) and time.monotonic() < deadline:
            consumer.consume(num_messages=1000, timeout=0.05)  # the messages themselves are not needed
            for t, p in parts:
                if (t, p) not in fetched:
                    _, hi = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
                    if hi >= 0:  # -1001 until a fetch response for the partition arrived
                        fetched[(t, p)] = hi
        out = {}
        for key, (lo, hi) in reported.items():
            if key in fetched:
                out[key] = (lo, max(hi, fetched[key]), "fetch")
            else:
                out[key] = (lo, hi, "list_offsets")
        return out if with_source else {k: v[1] for k, v in out.items()}
    finally:
        with contextlib.suppress(Exception):
            consumer.close()



async def fetched_end_offsets(bootstrap: str, partitions, timeout_s: float = 10.0) -> dict:
    """``{TopicPartition: end}`` from fetch responses' high watermarks (right on Tansu and on Kafka).

    Async and thread-free, so it can run inside faust's consumer thread loop.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=1024)
    await consumer.start()
    try:
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(reported[tp] - 1, begin[tp], 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=100)
        return {tp: max(reported[tp], consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()
