"""The drills' and soak's publisher counts a product as published only when the broker acknowledged it.

The failover drill once reported a product ``lost`` that nobody could find a trace of: its publisher counted
a product as sent when ``flush`` returned, acknowledged or not, so a product never written was charged to the
stream. These tests hold the publisher (and ``LocalStack.produce``) to what the broker acknowledged.
"""

from __future__ import annotations

import socket

import pytest

from streams.harness.publishing import PacedPublisher
from streams.harness.stack import LocalStack, read_topic
from streams.settings import Settings


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: nobody listens there


PRODUCTS = [{"product_id": f"p{i}", "version": 1, "title": f"Item {i}", "attributes": ["color_family"]}
            for i in range(30)]


def test_a_product_the_broker_never_acknowledged_is_not_counted_as_published():
    pub = PacedPublisher(_closed_port(), "t", PRODUCTS, rate=1000.0, deadline_s=1.0,
                         producer_config={"message.timeout.ms": 500})
    pub.start()
    pub.join(30)
    assert not pub.is_alive()
    assert pub.sent == 0 and pub.handed == len(PRODUCTS)
    assert len(pub.unacked) == len(PRODUCTS)
    assert pub.failures and pub.redelivered >= len(PRODUCTS)  # each failed delivery was produced again
    assert isinstance(pub.error, RuntimeError) and "30 product(s) never acknowledged" in str(pub.error)


def test_stack_produce_raises_on_records_the_broker_never_acknowledged(tmp_path):
    stack = LocalStack(tmp_path, bootstrap=_closed_port())
    stack.settings = Settings(kafka={"bootstrap": stack.bootstrap})
    with pytest.raises(RuntimeError, match="3 of 3 records not acknowledged"):
        stack.produce("product_updates", [(b"k", b"v")] * 3, timeout_s=0.5)


def test_every_product_counted_as_published_is_on_the_topic_once(broker, topic_prefix):
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"{topic_prefix}product-updates"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        f.result(10)
    pub = PacedPublisher(broker.bootstrap, topic, PRODUCTS * 10, rate=2000.0, deadline_s=30.0)
    pub.start()
    pub.join(60)
    assert pub.error is None and pub.sent == 300 and not pub.unacked
    on_topic = read_topic(broker.bootstrap, topic, until=300, timeout_s=30)
    assert len(on_topic) == 300
