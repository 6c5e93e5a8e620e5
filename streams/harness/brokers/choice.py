"""Which local broker to start: Apache Kafka where Java 17+ is present, Tansu otherwise."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["local_broker_kind", "start_local_broker"]


def local_broker_kind(prefer: str | None = None) -> str:
    """"kafka" or "tansu": ``prefer`` when given, else Kafka where Java 17+ is on PATH."""
    from streams.harness.brokers.kafka import java_major_version

    if prefer is not None:
        if prefer not in ("kafka", "tansu"):
            raise ValueError(f"unknown broker {prefer!r}: choose kafka or tansu")
        return prefer
    return "kafka" if (java_major_version() or 0) >= 17 else "tansu"


def start_local_broker(log_dir: Path, prefer: str | None = None, port: int = 0, nodes: int = 1) -> Any:
    """Start and return a local broker (``bootstrap``, ``name``, ``version``, ``stop()``, ``tail_log()``).

    ``nodes`` > 1 starts an Apache Kafka KRaft cluster (Tansu has no replication)."""
    if nodes > 1:
        if local_broker_kind(prefer) != "kafka":
            raise ValueError("a cluster (--nodes > 1) needs Apache Kafka (Java 17+ on PATH)")
        from streams.harness.brokers.cluster import KafkaCluster

        broker = KafkaCluster(log_dir=log_dir, nodes=nodes, port=port).start()
    elif local_broker_kind(prefer) == "kafka":
        from streams.harness.brokers.kafka import KafkaBroker

        broker = KafkaBroker(log_dir=log_dir, port=port).start()
    else:
        from streams.harness.brokers.tansu import TansuBroker

        broker = TansuBroker(log_dir=log_dir, port=port).start()
    log.info("local broker: %s %s at %s", broker.name, broker.version, broker.bootstrap)
    return broker
