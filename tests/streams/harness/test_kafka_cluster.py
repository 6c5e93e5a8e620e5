"""The three-node KRaft cluster: worker topics replicated 3 with min.insync.replicas=2, and a write acknowledged
with acks=all survives the SIGKILL of its partition's leader (the short cluster test of `make test`)."""

from __future__ import annotations

import pytest

from streams.harness.brokers.kafka import java_major_version

pytestmark = [pytest.mark.integration, pytest.mark.cluster,
              pytest.mark.skipif((java_major_version() or 0) < 17, reason="Apache Kafka needs Java 17+")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from streams.harness.brokers.cluster import KafkaCluster

    c = KafkaCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


def _produce(bootstrap: str, topic: str, keys: range) -> int:
    from confluent_kafka import Producer

    acked = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "log_level": 0})
    for i in keys:
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=0,
                  on_delivery=lambda err, msg: acked.append(err is None))
    assert p.flush(60) == 0
    return sum(acked)


def _read_all(bootstrap: str, topic: str, expected: int) -> list[str]:
    import time

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-probe", "enable.auto.commit": False,
                  "log_level": 0})
    c.assign([TopicPartition(topic, 0, 0)])
    values, deadline = [], time.monotonic() + 60
    while len(values) < expected and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            values.append(msg.value().decode())
    c.close()
    return values


def test_worker_topics_are_replicated_and_a_leader_kill_loses_no_acknowledged_write(cluster):
    from confluent_kafka.admin import AdminClient, ConfigResource

    from streams.settings import Settings
    from streams.topics import ensure_topics, topic_specs

    st = Settings(kafka={"bootstrap": cluster.bootstrap, "topic_prefix": "cl."}, topics={"replication": 3})
    assert set(ensure_topics(st)) == {s.name for s in topic_specs(st)}
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    md = admin.list_topics(timeout=10)
    for spec in topic_specs(st):
        assert {len(p.replicas) for p in md.topics[spec.name].partitions.values()} == {3}, spec.name
    resource = ConfigResource(ConfigResource.Type.TOPIC, st.topic("product_updates"))
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["min.insync.replicas"].value == "2"

    topic = st.topic("product_updates")
    assert _produce(cluster.bootstrap, topic, range(0, 200)) == 200
    leader = cluster.partition_leaders(topic)[0]
    cluster.kill(leader)
    assert _produce(cluster.bootstrap, topic, range(200, 400)) == 200  # two in-sync replicas remain
    assert cluster.partition_leaders(topic)[0] not in (leader, -1)
    cluster.restart(leader)
    values = _read_all(cluster.bootstrap, topic, 400)
    assert values == [f"v{i}" for i in range(400)]  # nothing lost, nothing written twice, in order
