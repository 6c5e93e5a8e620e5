"""Every worker's view of the current model of each attribute, kept fresh from the ``ds-model`` topic.

The learner of an attribute (the worker owning its ``ds-stats`` partition) publishes each new version to
``ds-model``; every worker reads all partitions of it (no consumer group) into a :class:`ModelRegistry`.
A worker that starts waits until it has read to the end, so it never decides with a stale cold model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import orjson

from llmens_core.aggregation import OnlineDawidSkene, default_online
from llmens_core.llm.config import EndpointConfig
from llmens_core.schema import AttributeSchema
from streams.offsets import fetched_end_offsets

log = logging.getLogger(__name__)

__all__ = ["ModelRegistry", "read_models_forever"]


class ModelRegistry:
    """Attribute -> current :class:`OnlineDawidSkene`; a missing attribute starts from the configured prior."""

    def __init__(self, schema: AttributeSchema, endpoints: Sequence[EndpointConfig] = (), **model_kwargs):
        self.schema = schema
        self.model_kwargs = model_kwargs
        self._models: dict[str, OnlineDawidSkene] = {}
        self.ready = asyncio.Event()
        self.on_update = None  # callable(attribute, summary) when a newer model is adopted
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints: Sequence[EndpointConfig]) -> None:
        self.llms = [e.name for e in endpoints if e.enabled]
        self.families = {e.name: e.family for e in endpoints if e.family}
        for m in self._models.values():
            m.add_workers(self.llms)
            if self.families:
                m.set_families(self.families)

    def cold(self, attribute: str) -> OnlineDawidSkene:
        kw = dict(self.model_kwargs)
        if self.families:
            kw["families"] = dict(self.families)
        m = default_online(list(self.schema[attribute].classes), **kw)
        m.add_workers(self.llms)
        return m

    def get(self, attribute: str) -> OnlineDawidSkene:
        m = self._models.get(attribute)
        if m is None:
            m = self._models[attribute] = self.cold(attribute)
        return m

    def offer(self, attribute: str, model: OnlineDawidSkene) -> bool:
        """Adopt ``model`` if it is newer than the one held; True when adopted."""
        cur = self._models.get(attribute)
        if cur is not None and cur.version >= model.version:
            return False
        if attribute in self.schema:
            model.add_classes(self.schema[attribute].classes)
        model.add_workers(self.llms)
        if self.families:
            model.set_families(self.families)
        self._models[attribute] = model
        if self.on_update is not None:
            self.on_update(attribute, model.summary())
        return True

    def offer_bytes(self, attribute: str, data: bytes) -> bool:
        """:meth:`offer` of a serialised model (see :meth:`decode_newer`)."""
        model = self.decode_newer(attribute, data)
        return model is not None and self.offer(attribute, model)

    def decode_newer(self, attribute: str, data: bytes) -> OnlineDawidSkene | None:
        """The model serialised in ``data`` when it is newer than the one held, else None: one not newer (e.g. this
        worker's learner's own version, read back from ``ds-model``) is skipped before its M-step. Changes nothing,
        so that it may run in a thread (a young model's record also rebuilds its copy-test counts)."""
        try:
            cur = self._models.get(attribute)
            if cur is not None and cur.version >= orjson.loads(data)["version"]:
                return None
            return OnlineDawidSkene.from_bytes(data)
        except Exception as exc:  # noqa: BLE001 - a bad model record must not stop the worker
            log.error("ignoring undecodable model for %s: %s", attribute, exc)
            return None

    def items(self):
        return self._models.items()

    def summaries(self) -> dict[str, dict]:
        return {a: m.summary() for a, m in sorted(self._models.items())}


async def read_models_forever(registry: ModelRegistry, bootstrap: str, topic: str,
                              on_model=None, ready_timeout_s: float = 30.0, max_record_bytes: int = 1048576) -> None:
    """Tail every partition of ``topic`` from the beginning into ``registry``; set ``registry.ready`` once at end.

    Uses aiokafka without a group: each worker reads everything. The end is judged from fetch
    responses' high watermarks (correct on the embedded broker too, unlike ListOffsets). Any registry with
    ``decode_newer``, ``offer``, ``get``, ``items`` and ``ready`` will do (the students' too, whose records are
    up to ``max_record_bytes``).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=max_record_bytes,
                                fetch_max_bytes=max(52428800, max_record_bytes))
    await consumer.start()
    try:
        parts = None
        for _ in range(100):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            with contextlib.suppress(KafkaError):  # the topic may just have been created
                await consumer._client.force_metadata_update()  # public topics() does not update the cache
            await asyncio.sleep(0.1)
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions yet (metadata not available)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        # "Caught up" = read up to the end offsets as they were when we started (fetch-based, so right on
        # the embedded broker too). Waiting for an idle topic instead never ends while learners publish.
        targets = await fetched_end_offsets(bootstrap, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ready_timeout_s
        while True:
            batches = await consumer.getmany(timeout_ms=300, max_records=1000)
            for _tp, msgs in batches.items():
                for msg in msgs:
                    attr = msg.key.decode() if msg.key else None
                    model = await asyncio.to_thread(registry.decode_newer, attr, msg.value) if attr else None
                    if model is not None and registry.offer(attr, model) and on_model:
                        on_model(attr, registry.get(attr))
            if not registry.ready.is_set():
                positions = [await consumer.position(tp) for tp in tps]
                caught_up = all(pos >= targets.get(tp, 0) for pos, tp in zip(positions, tps))
                if caught_up or loop.time() > give_up:
                    if not caught_up:
                        log.warning("models not fully loaded from %s after %.0fs; deciding with what is loaded",
                                    topic, ready_timeout_s)
                    log.info("models loaded from %s: %s", topic, sorted(a for a, _ in registry.items()))
                    registry.ready.set()
    finally:
        await consumer.stop()
