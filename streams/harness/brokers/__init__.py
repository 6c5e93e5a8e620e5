"""Brokers the harness starts on this machine: Apache Kafka (KRaft, from its jars) or Tansu (no Java)."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """A local broker could not be started or did not become ready."""


__all__ = ["BrokerError"]
