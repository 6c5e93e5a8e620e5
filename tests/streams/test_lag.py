"""`llmens lag`: end offsets right on the embedded broker (batched records), and Burrow-style status rules."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from streams.lag import (
    LagMonitor,
    LagSample,
    PartitionLag,
    Status,
    consumer_lag,
    end_offsets,
    evaluate_status,
)


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(10)


def _produce_batched(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    """Many records per producer batch, in a few rounds (Tansu's ListOffsets then reports the last batch's base)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000})
    for rnd in range(3):
        for part, n in counts.items():
            share = n // 3 + (1 if rnd < n % 3 else 0)
            for i in range(share):
                p.produce(topic, key=f"k{i}", value=b"v" * 64, partition=part)
        assert p.flush(10) == 0


@pytest.mark.integration
def test_lag_matches_counted_messages(broker, topic_prefix):
    topic, group = f"{topic_prefix}lag", f"{topic_prefix}group"
    produced = {0: 1000, 1: 451, 2: 37, 3: 0}
    _create(broker.bootstrap, topic, 4)
    _produce_batched(broker.bootstrap, topic, produced)

    ends = end_offsets(broker.bootstrap, [(topic, p) for p in produced], with_source=True)
    assert {p: ends[(topic, p)][1] for p in produced} == produced
    assert all(ends[(topic, p)][2] == "fetch" for p in produced)
    # ListOffsets never reports more than the fetch (on Tansu it reports less for batched partitions)
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic_prefix}probe"})
    reported = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in produced}
    probe.close()
    assert all(reported[p] <= produced[p] for p in produced)
    print("ListOffsets reported", reported, "counted", produced)

    to_consume = 700
    c = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })
    c.subscribe([topic])
    consumed: Counter[int] = Counter()
    next_offset: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while sum(consumed.values()) < to_consume and time.monotonic() < deadline:
        for m in c.consume(num_messages=to_consume - sum(consumed.values()), timeout=0.5):
            if m.error() is None:
                consumed[m.partition()] += 1
                next_offset[m.partition()] = m.offset() + 1
    assert sum(consumed.values()) == to_consume
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in next_offset.items()], asynchronous=False)
    c.close()

    rows = {r.partition: r for r in consumer_lag(broker.bootstrap, [group], [topic])}
    assert set(rows) == set(produced)
    for p, n in produced.items():
        r = rows[p]
        assert r.end == n, (p, r)
        assert r.end_source == "fetch"
        if p in next_offset:
            assert r.committed == consumed[p]
        else:  # never committed: reported from the start of the partition
            assert r.committed is None
        assert r.lag == n - consumed[p], (p, r)
    assert sum(r.lag for r in rows.values()) == sum(produced.values()) - to_consume

    # every group, no topic filter: the same rows for our group
    everything = [r for r in consumer_lag(broker.bootstrap) if r.group == group]
    assert {(r.partition, r.lag) for r in everything} == {(p, r.lag) for p, r in rows.items()}

    # the CLI's JSON output agrees
    from typer.testing import CliRunner

    from streams.cli import app

    res = CliRunner().invoke(app, ["lag", "--bootstrap", broker.bootstrap, "--group", group, "--json"])
    assert res.exit_code == 0, res.output
    import orjson

    lines = [orjson.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    assert {d["partition"]: d["lag"] for d in lines} == {p: n - consumed[p] for p, n in produced.items()}
    assert all(d["status"] in {s.value for s in Status} for d in lines)
    last = {d["partition"]: d for d in lines}  # the default takes 3 samples: nobody consumes, so not OK
    assert all(d["status"] in {"STALLED", "STOPPED"} for d in last.values() if d["lag"] > 0)


def _w(*triples, t0=1000.0, step=10.0):
    return [LagSample(t0 + i * step, c, lag) for i, (c, lag) in enumerate(triples)]


def test_status_rules():
    # lag zero at any point -> OK
    assert evaluate_status(_w((10, 5), (10, 0), (10, 7))) is Status.OK
    # committed offsets moving, lag not growing every step -> OK
    assert evaluate_status(_w((10, 5), (20, 9), (30, 4), (40, 6))) is Status.OK
    # committed not moving while lag > 0 -> STALLED within the threshold, STOPPED past it
    stuck = _w((10, 5), (10, 6), (10, 6))
    assert evaluate_status(stuck, stopped_after_s=300) is Status.STALLED
    assert evaluate_status(stuck, stopped_after_s=15) is Status.STOPPED
    # no commit at all with lag -> STOPPED
    assert evaluate_status(_w((None, 5), (None, 6))) is Status.STOPPED
    # moving but lag grows in every sample -> WARNING
    assert evaluate_status(_w((10, 5), (12, 8), (15, 11), (19, 30))) is Status.WARNING
    # ... but not with too few samples to say so
    assert evaluate_status(_w((10, 5), (12, 8))) is Status.OK
    # one sample cannot show movement
    assert evaluate_status(_w((10, 5))) is Status.UNKNOWN  # one sample cannot show a stalled consumer
    assert evaluate_status([]) is Status.OK


def test_monitor_window_and_stopped_threshold():
    mon = LagMonitor("unused:1", window=3, stopped_after_s=60)

    def row(t, committed, lag):
        return PartitionLag("g", "t", 0, committed, (committed or 0) + lag, lag, timestamp=t)

    assert mon.observe([row(0, 10, 5)])[0][1] is Status.UNKNOWN
    assert mon.observe([row(10, 10, 5)])[0][1] is Status.STALLED
    # the window (3) only ever spans 20 s, yet the offset has not moved for 70 s -> STOPPED
    for t in (20, 30, 40, 50, 60):
        mon.observe([row(t, 10, 5)])
    assert mon.observe([row(70, 10, 5)])[0][1] is Status.STOPPED
    # it moves again, lag growing each time -> WARNING once the window is full of movement
    mon.observe([row(80, 11, 6)])
    mon.observe([row(90, 12, 7)])
    assert mon.observe([row(100, 13, 8)])[0][1] is Status.WARNING
    assert mon.observe([row(110, 20, 0)])[0][1] is Status.OK


@pytest.mark.integration
def test_lag_piped_prints_whole_topic_names_one_partition_a_line(broker, topic_prefix):
    """Before: the table was cut at 80 columns and a topic read "llmens.attrib…"."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from typer.testing import CliRunner

    from streams.cli import app

    topic = f"{topic_prefix}llmens.attribute-feedback-with-a-long-deployment-name"
    group = f"{topic_prefix}a-consumer-group-with-a-long-name"
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        p.produce(topic, key=f"k{i}", value=b"v", partition=0)
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    c.close()
    res = CliRunner().invoke(app, ["lag", "--bootstrap", broker.bootstrap, "--group", group, "--samples", "1"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if topic in line]
    assert len(rows) == 1 and group in rows[0] and "…" not in res.output, res.output
    cells = [c.strip() for c in rows[0].split("│")[1:-1]]
    assert cells[:6] == [group, topic, "0", "2", "5", "3"], res.output
