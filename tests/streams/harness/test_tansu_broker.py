"""The Tansu broker manager: a real Tansu process, started on a free port and stopped by its PID."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient

from streams.harness.brokers import BrokerError
from streams.harness.brokers.tansu import TansuBroker

pytestmark = pytest.mark.integration


def test_start_answers_metadata_and_stop_ends_the_process(tmp_path):
    b = TansuBroker(log_dir=tmp_path).start()
    pid = b.process.pid
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
    assert md.brokers and (tmp_path / f"tansu-{b.port}.pid").read_text() == str(pid)
    b.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / f"tansu-{b.port}.pid").exists()
    assert "tansu" in b.tail_log()


def test_a_busy_port_is_refused_and_the_running_broker_keeps_answering(broker, tmp_path):
    with pytest.raises(BrokerError, match="already in use"):
        TansuBroker(port=broker.port, log_dir=tmp_path).start()
    assert AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).brokers
