"""The input offset is never committed past an event still in flight (faust-streaming issue #606)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP
from hypothesis import example, given
from hypothesis import strategies as st

from streams.faust_ext.commit_guard import GuardedConsumer, mark_finished, next_commit
from streams.faust_ext.transport import install_transport
from streams.harness.processes import free_port, stop_process_group
from streams.harness.stack import read_topic

APP = Path(__file__).with_name("commit_guard_app.py")


def test_a_slow_head_event_holds_the_commit_back():
    # the reproduction of faust #606: 2585 still processing, 2586-2589 done; faust committed 2590
    assert next_commit([2586, 2587, 2588, 2589], 2585, in_flight=[2585]) == (None, 0)
    assert next_commit([2586, 2587, 2588, 2589], None, in_flight=[2585]) == (None, 0)


def test_commit_stops_at_the_first_event_in_flight_and_uses_only_what_it_commits():
    assert next_commit([10, 11, 12, 14], 10, in_flight=[13]) == (13, 3)
    assert next_commit([10, 11, 12, 13], 10, in_flight=[12]) == (12, 2)
    assert next_commit([10, 11, 12, 13], 10, in_flight=[]) == (14, 4)


def test_one_missing_head_offset_is_passed_over_only_once_known_to_be_no_record():
    assert next_commit([11, 12], 10, in_flight=[], head_gap=0) == (None, 0)
    assert next_commit([13], 10, in_flight=[], head_gap=3) == (14, 1)  # three markers, known
    assert next_commit([11, 12], 10, in_flight=[]) == (13, 2)  # compacted away or a control record
    assert next_commit([12, 13], 10, in_flight=[]) == (None, 0)


def test_events_in_flight_below_the_committed_offset_do_not_hold_it():
    assert next_commit([20, 21], 20, in_flight=[5]) == (22, 2)


@example(committed=0, status=["n", "a"], head_gap=0)
@given(committed=st.integers(0, 30), status=st.lists(st.sampled_from("adfn"), max_size=40),
       head_gap=st.integers(0, 2))
def test_never_past_an_event_in_flight_and_never_over_a_missing_one(committed, status, head_gap):
    """a = acked, f = in flight, n = not taken yet, d = acked (a second chance of it)."""
    acked = [committed + i for i, s in enumerate(status) if s in "ad"]
    in_flight = [committed + i for i, s in enumerate(status) if s == "f"]
    end, used = next_commit(acked, committed, in_flight, head_gap=head_gap)
    if end is None:
        assert used == 0
        return
    assert end > committed
    assert not any(committed <= o < end for o in in_flight)
    missing = [o for o in range(committed, end) if o not in acked]
    assert missing == list(range(committed, committed + len(missing))) and len(missing) <= head_gap
    assert used == sum(1 for o in acked if o < end)


@pytest.fixture(scope="module")
def faust_consumer():
    """The guarded consumer faust builds from our transport (built without connecting to a broker)."""
    import faust

    app = faust.App("commit-guard-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    install_transport(app)
    app.topic("src")
    app.topics._acking_topics.add("src")  # what faust does for an agent's topic once the worker runs
    assert isinstance(app.consumer, GuardedConsumer)
    return app.consumer


def _seeked(consumer, generation, *partitions):
    """What the guard records once faust has read the committed offsets of ``partitions`` in ``generation``."""
    consumer.app.consumer_generation_id = generation
    consumer.guard.seeked = (generation, frozenset(TP("src", p) for p in partitions))


def _messages(consumer, offsets, generation, partition=0):
    from faust.types.tuples import ConsumerMessage

    out = []
    for o in offsets:
        m = ConsumerMessage(topic="src", partition=partition, offset=o, timestamp=0.0, timestamp_type=0, headers=[],
                            key=None, value=b"", checksum=None, generation_id=generation)
        m.tracked = True
        consumer._unacked_messages.add(m)
        out.append(m)
    return out


def test_faust_consumer_with_the_guard_holds_the_commit_behind_a_slow_head_event(faust_consumer):
    c, tp = faust_consumer, TP("src", 0)
    _seeked(c, 1, 0)
    c._committed_offset[tp] = 100
    slow, *fast = _messages(c, range(100, 105), generation=1)
    for m in fast:
        assert c.ack(m)
    assert c._new_offset(tp) is None  # plain faust: 105
    assert c.ack(slow)
    assert c._new_offset(tp) == 105 and not c._acked[tp]


def test_acks_of_an_earlier_generation_do_not_count_towards_a_commit(faust_consumer):
    c, tp = faust_consumer, TP("src", 0)
    _seeked(c, 3, 0)
    c._committed_offset[tp] = 200
    stale = _messages(c, [200, 201, 202], generation=2)  # skipped by the stream after the rebalance
    assert not any(c.ack(m) for m in stale)
    assert all(m.acked and m not in c._unacked_messages for m in stale)
    assert c._new_offset(tp) is None  # plain faust: 203, though none of the three was processed
    fresh = _messages(c, [200, 201, 202], generation=3)  # the copies re-read from the committed offset
    assert all(c.ack(m) for m in fresh)
    assert c._new_offset(tp) == 203


def test_a_head_that_never_reached_the_agent_holds_the_commit_until_re_read(faust_consumer, monkeypatch):
    import asyncio

    c, tp = faust_consumer, TP("src", 1)
    _seeked(c, 4, 1)
    c._committed_offset[tp] = 300
    seeks = []

    async def seek(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(c, "rewind", seek)
    later = _messages(c, [301, 302, 303], generation=4, partition=1)
    assert all(c.ack(m) for m in later)
    assert c._new_offset(tp) is None  # plain faust: 304, over 300, which nobody processed
    assert asyncio.run(c.heal_held_heads(hold_s=0)) == [(tp, 300, "redeliver")] and seeks == [(tp, 300)]
    (again,) = _messages(c, [300], generation=4, partition=1)  # the re-read copy
    assert c.ack(again) and c._new_offset(tp) == 304 and not c.guard.held


def test_a_head_still_missing_after_re_reads_is_no_record_and_is_passed(faust_consumer, monkeypatch):
    import asyncio

    c, tp = faust_consumer, TP("src", 2)
    _seeked(c, 5, 2)
    c._committed_offset[tp] = 400

    async def seek(partition, offset):
        pass

    monkeypatch.setattr(c, "rewind", seek)
    assert all(c.ack(m) for m in _messages(c, [401, 402], generation=5, partition=2))
    actions = []
    for _ in range(3):
        assert c._new_offset(tp) is None
        actions += asyncio.run(c.heal_held_heads(hold_s=0, rereads=2))
    assert [a for _, _, a in actions] == ["redeliver", "redeliver", "gap"]
    assert c._new_offset(tp) == 403  # a transaction marker or a compacted record at 400


def test_no_commit_before_the_committed_offset_is_read_or_after_the_partition_is_gone(faust_consumer):
    c, tp = faust_consumer, TP("src", 3)
    _seeked(c, 6, 0)  # partition 3 is not (or no longer) ours in this generation
    c._committed_offset[tp] = 500
    assert all(c.ack(m) for m in _messages(c, [500, 501], generation=6, partition=3))
    assert c._new_offset(tp) is None  # plain faust: 502, for a partition another worker may own
    c.guard.seeked = None  # revoked; the next assignment's seek has not run yet
    assert c._new_offset(tp) is None
    _seeked(c, 6, 3)
    assert c._new_offset(tp) == 502


def test_on_the_agents_topics_only_finished_messages_count(faust_consumer):
    c, tp = faust_consumer, TP("src", 4)
    _seeked(c, 7, 4)
    c._committed_offset[tp] = 600
    c.transport.tracked_topics = frozenset({"src"})
    try:
        skipped, done = _messages(c, [600, 601], generation=7, partition=4)
        mark_finished(done)
        assert not c.ack(skipped)  # acked by faust's stream without reaching the agent, or abandoned
        assert c.ack(done)
        assert c._new_offset(tp) is None  # plain faust: 602
        (again,) = _messages(c, [600], generation=7, partition=4)
        mark_finished(again)
        assert c.ack(again) and c._new_offset(tp) == 602
    finally:
        c.transport.tracked_topics = frozenset()


def test_a_head_lost_before_the_first_commit_holds_that_commit_until_re_read(faust_consumer, monkeypatch):
    import asyncio

    c, tp = faust_consumer, TP("src", 13)
    _seeked(c, 8, 13)
    c.guard.first_offsets[tp] = 0  # rewound to its first offset when faust sought: nothing committed yet
    seeks = []

    async def rewind(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(c, "rewind", rewind)
    assert all(c.ack(m) for m in _messages(c, range(10, 20), generation=8, partition=13))
    assert c.commit_floor(tp) == 0 and c._new_offset(tp) is None  # plain faust: 20, over offsets 0..9
    assert asyncio.run(c.heal_held_heads(hold_s=0)) == [(tp, 0, "redeliver")] and seeks == [(tp, 0)]
    assert all(c.ack(m) for m in _messages(c, range(10), generation=8, partition=13))
    assert c._new_offset(tp) == 20 and not c.guard.held


def test_seeking_to_committed_offsets_rewinds_tracked_partitions_nobody_has_committed(faust_consumer, monkeypatch):
    import asyncio

    c = faust_consumer
    committed, never, at_zero, other = TP("src", 10), TP("src", 11), TP("src", 12), TP("changelog", 0)
    rewound = []

    async def seek_to_committed():
        return {committed: 120, never: None, at_zero: 0, other: None}

    async def rewind_many(offsets):
        rewound.extend(offsets.items())
        return list(offsets)

    monkeypatch.setattr(c, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(c, "rewind_many", rewind_many)
    monkeypatch.setattr(c, "assignment", lambda: {committed, never, at_zero, other})
    c.transport.tracked_topics = frozenset({"src"})
    try:
        asyncio.run(c.perform_seek())
    finally:
        c.transport.tracked_topics = frozenset()
    # aiokafka leaves these where the fetcher was; faust may have dropped what it fetched there
    assert sorted(rewound, key=lambda r: r[0].partition) == [(never, None), (at_zero, None)]
    assert c.committed_offset(committed) == 120 and c.guard.seeked[1] == {committed, never, at_zero, other}


def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset if tp.offset >= 0 else None
    finally:
        c.close()


def _source_topic(broker, prefix: str, values: list[bytes]) -> None:
    """Create one-partition ``src`` and ``out`` topics and write ``values`` to ``src``."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(f"{prefix}{t}", 1, 1) for t in ("src", "out")]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for value in values:
        p.produce(f"{prefix}src", value=value)
    p.flush(10)


def _start(broker, prefix: str, log: Path, *, slow: bool, guard: bool = True,
           drop_head: bool = False) -> subprocess.Popen:
    env = {**os.environ, "LLMENS_TEST_SLOW": "1" if slow else "0", "LLMENS_TEST_GUARD": "1" if guard else "0",
           "LLMENS_TEST_TANSU": "1" if broker.name == "Tansu" else "0",
           "LLMENS_TEST_DROP_HEAD": "1" if drop_head else "0", "LLMENS_TEST_WEB_PORT": str(free_port())}
    bootstrap = broker.bootstrap
    return subprocess.Popen([sys.executable, str(APP), bootstrap, prefix], env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.integration
def test_a_killed_worker_redoes_the_event_it_had_in_flight(tmp_path, broker, topic_prefix):
    _source_topic(broker, topic_prefix, [b"slow"] + [f"fast-{i}".encode() for i in range(20)])
    log = tmp_path / "copier.log"
    proc = _start(broker, topic_prefix, log, slow=True)
    try:
        copied = read_topic(broker.bootstrap, f"{topic_prefix}out", timeout_s=90,
                            stop=lambda ms: len(ms) >= 20 or proc.poll() is not None)
        assert len(copied) == 20 and b"slow" not in {m.value() for m in copied}, log.read_text()[-3000:]
        time.sleep(3.0)  # several commit intervals (0.5 s) with "slow" in flight and the 20 after it done
        assert _committed(broker.bootstrap, f"{topic_prefix}copier", f"{topic_prefix}src") in (None, 0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc = _start(broker, topic_prefix, log, slow=False)
    try:
        copied = read_topic(broker.bootstrap, f"{topic_prefix}out", timeout_s=90,
                            stop=lambda ms: any(m.value() == b"slow" for m in ms) or proc.poll() is not None)
        assert b"slow" in {m.value() for m in copied}, log.read_text()[-3000:]
    finally:
        stop_process_group(proc, 20)


@pytest.mark.integration
def test_without_the_guard_faust_commits_over_the_event_in_flight(tmp_path, broker, topic_prefix):
    """The failure the guard prevents, on this broker: faust's own rule commits past the unfinished head."""
    _source_topic(broker, topic_prefix, [b"slow"] + [f"fast-{i}".encode() for i in range(20)])
    log = tmp_path / "copier.log"
    proc = _start(broker, topic_prefix, log, slow=True, guard=False)
    try:
        read_topic(broker.bootstrap, f"{topic_prefix}out", timeout_s=90,
                   stop=lambda ms: len(ms) >= 20 or proc.poll() is not None)
        deadline, committed = time.monotonic() + 20, None
        while time.monotonic() < deadline and committed != 21:
            time.sleep(0.5)
            committed = _committed(broker.bootstrap, f"{topic_prefix}copier", f"{topic_prefix}src")
        assert committed == 21, log.read_text()[-3000:]  # "slow" (offset 0) is still in flight: lost if killed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.integration
def test_a_head_record_that_never_reached_the_agent_is_healed_end_to_end(tmp_path, broker, topic_prefix):
    """A worker loses offset 1 between fetch and agent: the commit holds at 1, the watchdog seeks back to it,
    the re-read copy is processed, then the commit passes. Without the hold faust would commit 22 over it."""
    _source_topic(broker, topic_prefix, [b"before", b"head"] + [f"next-{i}".encode() for i in range(20)])
    group = f"{topic_prefix}copier"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(f"{topic_prefix}src", 0, 1)], asynchronous=False)  # "before" is done
    c.close()
    log = tmp_path / "copier.log"
    proc = _start(broker, topic_prefix, log, slow=False, drop_head=True)
    try:
        copied = read_topic(broker.bootstrap, f"{topic_prefix}out", timeout_s=90,
                            stop=lambda ms: b"head" in {m.value() for m in ms} or proc.poll() is not None)
        assert b"head" in {m.value() for m in copied}, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _committed(broker.bootstrap, group, f"{topic_prefix}src") != 22:
            time.sleep(0.5)
        text = log.read_text()
        assert "dropped offset 1 before the agent" in text and "at 1: redeliver" in text, text[-3000:]
        assert _committed(broker.bootstrap, group, f"{topic_prefix}src") == 22
    finally:
        stop_process_group(proc, 20)


def test_a_revocation_waits_for_a_decision_being_written_and_refuses_new_claims(faust_consumer, monkeypatch):
    import asyncio

    c, tp = faust_consumer, TP("src", 5)
    monkeypatch.setattr(c, "assignment", lambda: {tp})
    order: list[str] = []

    async def run() -> None:
        release = c.claim(tp)
        assert release is not None
        revoking = asyncio.ensure_future(c.on_partitions_revoked({tp}))
        await asyncio.sleep(0.05)
        assert not revoking.done() and c.claim(tp) is None  # the next owner must find it in the table
        order.append("written")
        release()
        await revoking
        order.append("revoked")

    asyncio.run(run())
    assert order == ["written", "revoked"] and c.claim(tp) is not None


def test_a_fetch_gap_on_the_agents_topic_holds_the_commit_until_re_read(faust_consumer, monkeypatch):
    """The failover drill's lost product: faust took offsets 302..305 it never delivered for a compaction gap
    (``consumer gap ... 302..305``) and committed over them; p4@305 was never decided."""
    import asyncio

    c, tp = faust_consumer, TP("src", 5)
    _seeked(c, 9, 5)
    c._committed_offset[tp] = 301
    seeks = []

    async def rewind(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(c, "rewind", rewind)
    c.transport.tracked_topics = frozenset({"src"})
    try:
        (first,) = _messages(c, [301], generation=9, partition=5)
        mark_finished(first)
        assert c.ack(first)
        asyncio.run(c._add_gap(tp, 302, 305))  # the fetch jumped from 301 to 306
        after = _messages(c, [306, 307], generation=9, partition=5)
        for m in after:
            mark_finished(m)
            assert c.ack(m)
        assert c._new_offset(tp) == 302  # faust's rule: 308, over 302..305
        c._committed_offset[tp] = 302  # that commit succeeded
        assert c._new_offset(tp) is None and tp in c.guard.held
        assert asyncio.run(c.heal_held_heads(hold_s=0)) == [(tp, 302, "redeliver")] and seeks == [(tp, 302)]
        for m in _messages(c, [302, 303, 304, 305], generation=9, partition=5):  # the re-read copies
            mark_finished(m)
            assert c.ack(m)
        assert c._new_offset(tp) == 308
    finally:
        c.transport.tracked_topics = frozenset()


def test_a_fetch_that_overlapped_a_seek_is_dropped_and_read_again_from_the_sought_offset(faust_consumer, monkeypatch):
    """A batch fetched from the position before a rebalance's seek, handed over after it, would reach the
    agent stamped with the new generation and make faust see a gap from the sought offset to the batch."""
    import asyncio

    c, tp, changelog = faust_consumer, TP("src", 6), TP("changelog", 6)
    rewound = []

    async def fetched_across_a_seek(active_partitions, timeout):
        c.guard.seek_epoch += 2  # perform_seek ran on the worker's loop while the consumer thread fetched
        c._read_offset[tp] = 301  # ... and faust now reads tp from its committed offset
        return {tp: ["records from 306 on"], changelog: ["a changelog record"]}

    async def rewind_many(offsets):
        rewound.append(offsets)
        return list(offsets)

    monkeypatch.setattr(c, "_getmany", fetched_across_a_seek)
    monkeypatch.setattr(c, "_get_active_partitions", lambda: {tp, changelog})
    monkeypatch.setattr(c, "rewind_many", rewind_many)
    monkeypatch.setattr(c, "flow_active", True)
    c.transport.tracked_topics = frozenset({"src"})
    try:
        records, _ = asyncio.run(c._wait_next_records(1.0))
        assert records == {changelog: ["a changelog record"]} and rewound == [{tp: 301}]

        async def plain_fetch(active_partitions, timeout):
            return {tp: ["records from 301 on"]}

        monkeypatch.setattr(c, "_getmany", plain_fetch)
        records, _ = asyncio.run(c._wait_next_records(1.0))
        assert records == {tp: ["records from 301 on"]} and len(rewound) == 1
    finally:
        c.transport.tracked_topics = frozenset()


def test_no_commit_of_an_agents_partition_whose_floor_is_unknown(faust_consumer, monkeypatch):
    """The drill's other lost product: p0 went from 284 to 294 in one commit over p0@286, abandoned in the
    revoked generation, while 287..293 (finished after the revocation) were the only acks. Without a committed
    offset or a first offset to start from, the first run of acks is no proof that nothing before it is missing."""
    import asyncio

    c, tp = faust_consumer, TP("src", 7)
    _seeked(c, 10, 7)
    assert c.app.conf.consumer_auto_offset_reset == "earliest"
    c._committed_offset.pop(tp, None)
    sought = []

    async def perform_seek():
        sought.append(True)
        c._committed_offset[tp] = 284  # what Kafka holds

    monkeypatch.setattr(c, "perform_seek", perform_seek)
    monkeypatch.setattr(c, "rewind", lambda *a: asyncio.sleep(0))
    c.transport.tracked_topics = frozenset({"src"})
    try:
        for m in _messages(c, range(287, 294), generation=10, partition=7):
            mark_finished(m)
            assert c.ack(m)
        assert c._new_offset(tp) is None  # faust's rule (and the guard before): 294
        assert asyncio.run(c.heal_held_heads(hold_s=0)) == [(tp, -1, "reseek")] and sought == [True]
        assert c._new_offset(tp) is None and c.guard.held[tp][0] == 284  # held at the head, re-read later
    finally:
        c.transport.tracked_topics = frozenset()


def test_a_rewind_skips_a_partition_a_rebalance_took_while_it_looked_up_the_first_offset(faust_consumer, monkeypatch):
    """The drill's workers died of it: aiokafka refused the watchdog's seek of a partition revoked while the
    seek awaited its beginning offset (IllegalStateError in a timer stops a faust worker)."""
    import asyncio

    from aiokafka.errors import IllegalStateError
    from aiokafka.structs import TopicPartition as AioTP

    c, kept, taken = faust_consumer, TP("src", 8), TP("src", 9)

    class Aiokafka:
        assigned = {AioTP("src", 8), AioTP("src", 9)}
        sought: dict = {}

        def assignment(self):
            return set(self.assigned)

        async def beginning_offsets(self, tps):
            self.assigned = {AioTP("src", 8)}  # the rebalance lands here
            return {tp: 0 for tp in tps}

        def seek(self, tp, offset):
            if tp not in self.assigned:
                raise IllegalStateError(f"No current assignment for partition {tp}")
            self.sought[tp] = offset

    aiokafka = Aiokafka()

    class Thread:
        def _ensure_consumer(self):
            return aiokafka

        async def call_thread(self, fn):
            return await fn()

    monkeypatch.setattr(c, "_thread", Thread())
    assert asyncio.run(c.rewind_many({kept: None, taken: None})) == [kept]
    assert aiokafka.sought == {AioTP("src", 8): 0} and taken not in c.guard.first_offsets
