"""Every faust / aiokafka internal llmens touches, with the version it was checked on.

Public seams come first (a consumer subclass handed to faust through ``app.transport``), but a commit rule
needs faust's ack book-keeping, and the stall watchdog needs aiokafka's fetch positions. Each such name is
listed here; :func:`missing_internals` finds the ones a newer faust lacks, the transport refuses to start
without them, and ``tests/streams/faust_ext/test_internals.py`` fails when one is gone.
"""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["CHECKED_ON", "INTERNALS", "missing_internals", "require_internals"]

CHECKED_ON = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

INTERNALS: list[tuple[str, str, str]] = [
    # (owner, attribute, what llmens does with it)
    ("faust.transport.consumer:Consumer", "_new_offset", "overridden: the commit rule (GuardedConsumer)"),
    ("faust.transport.consumer:Consumer", "_add_gap", "overridden: a fetch gap on the agents' topics is not done"),
    ("faust.transport.consumer:Consumer", "_wait_next_records",
     "overridden: drops the agents' records of a fetch that overlapped a seek"),
    ("faust.transport.consumer:Consumer", "_acked", "read/trimmed by the commit rule"),
    ("faust.transport.consumer:Consumer", "_acked_index", "trimmed by the commit rule"),
    ("faust.transport.consumer:Consumer", "_gap", "gap ranges merged by the commit rule"),
    ("faust.transport.consumer:Consumer", "_committed_offset", "read: commit rule, watchdog"),
    ("faust.transport.consumer:Consumer", "_unacked_messages", "read: offsets in flight"),
    ("faust.transport.consumer:Consumer", "_read_offset", "read: last offset delivered (watchdog); reset by rewind"),
    ("faust.transport.consumer:Consumer", "_paused_partitions", "read: /counters"),
    ("faust.transport.consumer:Consumer", "_active_partitions", "read: /counters"),
    ("faust.transport.drivers.aiokafka:Consumer", "_new_consumer_thread", "overridden: Tansu's thread"),
    ("faust.transport.drivers.aiokafka:Consumer", "_thread", "read: aiokafka consumer (fetch positions)"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_highwaters", "overridden on Tansu"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_commit",
     "wrapped: a commit failing on a lost broker connection returns False instead of crashing the worker"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_consumer", "read: fetch positions"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_ensure_consumer",
     "called on the consumer thread: GuardedConsumer.rewind seeks there"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_subscription", "read: fetch positions"),
    ("aiokafka.consumer.subscription_state:TopicPartitionState", "_position", "read: fetch position"),
    ("aiokafka.consumer.subscription_state:TopicPartitionState", "_status", "read: /counters"),
    ("faust.tables.base:Collection", "_on_changelog_sent", "callback of the awaited changelog send"),
    ("faust.stores.rocksdb:Store", "_dbs", "read: per-partition databases' memory on /debug/memory"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "_client", "force_metadata_update: a just-created topic"),
    ("faust.transport.drivers.aiokafka:Producer", "_settings_extra",
     "overridden: acks=all and idempotence outside transactions too (IdempotentProducer)"),
]
"""Attributes may be set in ``__init__`` only; those are checked on an instance's class annotations."""


def _has(owner: str, attribute: str) -> bool:
    import importlib
    import inspect

    module, _, name = owner.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if hasattr(cls, attribute):
        return True
    annotations = {k for c in inspect.getmro(cls) for k in getattr(c, "__annotations__", {})}
    if attribute in annotations:
        return True
    init = "".join(inspect.getsource(c.__init__) for c in inspect.getmro(cls)
                   if "__init__" in vars(c) and c.__module__.split(".")[0] in {"faust", "aiokafka"})
    return f"self.{attribute} =" in init or f"self.{attribute}:" in init


def missing_internals() -> list[str]:
    """``owner.attribute`` of every listed internal the installed faust / aiokafka lacks."""
    return [f"{o}.{a}" for o, a, _ in INTERNALS if not _has(o, a)]


def require_internals() -> None:
    """Raise RuntimeError naming what is missing and the versions the list was checked on."""
    missing = missing_internals()
    if missing:
        installed = {p: version(p) for p in CHECKED_ON}
        raise RuntimeError(f"faust/aiokafka internals missing: {', '.join(missing)} (installed {installed}, "
                           f"checked on {CHECKED_ON}); see streams/faust_ext/internals.py")
