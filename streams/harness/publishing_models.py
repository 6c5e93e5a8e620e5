"""Reading and writing aggregation models on the ds-model topic from outside a worker (CLI, tests)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from confluent_kafka import Producer

from llmens_core.aggregation import OnlineDawidSkene
from streams.harness.stack import read_topic

__all__ = ["current_versions", "publish_models"]


def current_versions(bootstrap: str, topic: str, timeout_s: float = 15.0) -> dict[str, int]:
    """Latest model version per attribute on ``topic`` (read from the beginning until idle)."""
    versions: dict[str, int] = {}
    for msg in read_topic(bootstrap, topic, idle_s=1.0, timeout_s=timeout_s):
        if msg.key():
            try:
                v = int(orjson.loads(msg.value())["version"])
            except Exception:  # noqa: BLE001 - a foreign record does not stop the CLI
                continue
            attr = msg.key().decode()
            versions[attr] = max(v, versions.get(attr, 0))
    return versions


def publish_models(bootstrap: str, topic: str, models: Mapping[str, OnlineDawidSkene]) -> None:
    """Produce each model keyed by attribute and wait for delivery."""
    p = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True})
    for attr, model in models.items():
        p.produce(topic, key=attr.encode(), value=model.to_bytes())
    if p.flush(30):
        raise RuntimeError(f"could not deliver every model to {topic}")
