"""The Apache Kafka manager (start, answer, SIGKILL, restart on the same log dir) and lag vs Kafka's own tool."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from streams.harness.brokers.kafka import KafkaBroker, java_major_version

needs_java = pytest.mark.skipif((java_major_version() or 0) < 17, reason="Apache Kafka needs Java 17+")


def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for part, n in counts.items():
        for i in range(n):
            p.produce(topic, key=f"k{i}", value=b"v", partition=part)
    assert p.flush(15) == 0


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # held until the futures are done (a freed one fails them)
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(15)


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    c.close()


@pytest.mark.integration
@needs_java
def test_kafka_survives_sigkill_and_restarts_on_the_same_log_dir(tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    b = KafkaBroker(log_dir=tmp_path).start()
    try:
        _create(b.bootstrap, "survive", 2)
        _produce(b.bootstrap, "survive", {0: 50, 1: 7})
        pid = b.proc.pid
        b.kill()
        assert b.proc.poll() is not None
        b.restart()
        assert b.proc.pid != pid
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "probe"})
        ends = {p: c.get_watermark_offsets(TopicPartition("survive", p), timeout=15)[1] for p in (0, 1)}
        c.close()
        assert ends == {0: 50, 1: 7}
    finally:
        b.stop()
    assert b.proc.poll() is not None


def _kafka_tool_describe(broker, group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (current offset, log end offset, lag) from kafka-consumer-groups --describe."""
    out = subprocess.run(
        ["java", "-Xmx128m", "-cp", f"{broker.lib}/*", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
         "--bootstrap-server", broker.bootstrap, "--describe", "--group", group],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and re.fullmatch(r"\d+", cols[2]):
            rows[(cols[1], int(cols[2]))] = (int(cols[3]), int(cols[4]), int(cols[5]))
    return rows


@pytest.mark.integration
def test_llmens_lag_agrees_with_kafka_consumer_groups(broker, topic_prefix):
    if getattr(broker, "name", "") != "Apache Kafka":
        pytest.skip("Kafka's ConsumerGroupCommand is compared on Apache Kafka only (no Java here)")
    topic, group = f"{topic_prefix}lagcmp", f"{topic_prefix}grp"
    produced = {0: 120, 1: 45, 2: 9, 3: 0}
    committed = {0: 100, 1: 45, 2: 3, 3: 0}
    _create(broker.bootstrap, topic, 4)
    _produce(broker.bootstrap, topic, produced)
    _commit(broker.bootstrap, group, topic, committed)

    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "lag", "--json", "--group", group, "--bootstrap", broker.bootstrap],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    ours = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            ours[(r["topic"], r["partition"])] = (r["committed"], r["end"], r["lag"])
    theirs = _kafka_tool_describe(broker, group)
    expected = {(topic, p): (committed[p], produced[p], produced[p] - committed[p]) for p in produced}
    assert theirs == expected
    assert ours == expected
