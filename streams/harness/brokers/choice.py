"""Which embedded broker to start: Apache Kafka where Java 17+ is present, Tansu otherwise.

Kept apart from the code that uses it so the choice is one small function; it logs which it started.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded_broker(log_dir: Path, prefer: str | None = None):
    """Start and return Apache Kafka (Java 17+ present) or Tansu; ``prefer`` = "kafka"/"tansu" forces one.

    The returned object has ``bootstrap``, ``name``, ``version``, ``stop()`` and ``tail_log()``.
    """
    from streams.harness.brokers.kafka import KafkaBroker, java_major_version

    java = java_major_version()
    if prefer != "tansu" and (prefer == "kafka" or (java or 0) >= 17):
        broker = KafkaBroker(log_dir=log_dir).start()
    else:
        from streams.embedded import EmbeddedBroker

        broker = EmbeddedBroker(log_dir=log_dir)
        broker.name, broker.version = "Tansu", "embedded"
        broker.start()
    log.warning("embedded broker: %s %s at %s", broker.name, broker.version, broker.bootstrap)
    return broker
