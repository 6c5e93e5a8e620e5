"""Tansu-only workarounds for faust: settings of the local profile and changelog end offsets from a fetch.

Tansu answers ListOffsets(latest) with the base offset of the last record batch + 1, so faust would stop
recovering a changelog early (losing state) or crash with ``ConsistencyError``; one record per producer
batch avoids that but serialises every partition's sends (measured: ~2x slower). :class:`TansuConsumerThread`
takes the end from a fetch response instead (:func:`streams.offsets.fetched_end_offsets`). Apache Kafka
needs none of this; the transport uses the class only when ``kafka.tansu`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.faust_ext.consumer_thread import GuardedConsumerThread
from streams.offsets import fetched_end_offsets

__all__ = ["LOCAL_BROKER_FAUST_SETTINGS", "TANSU_FAUST_SETTINGS", "TansuConsumerThread"]

LOCAL_BROKER_FAUST_SETTINGS: dict[str, object] = {
    # A single local broker (Apache Kafka or Tansu) in tests, drills and the demo: fast group joins.
    "consumer_auto_offset_reset": "earliest",
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.2,
    "broker_rebalance_timeout": 2.0,
    "broker_commit_interval": 0.5,
    "processing_guarantee": "at_least_once",
    "consumer_metadata_max_age_ms": 5_000,
}
"""faust settings of the local-broker profile (``kafka.embedded``), never production defaults."""

TANSU_FAUST_SETTINGS: dict[str, object] = {
    # A fetch Tansu never answers (seen after a member was SIGKILLed) is retried after this instead of 90 s.
    "broker_request_timeout": 10.0,
}
"""faust settings only Tansu needs (``kafka.tansu``)."""


class TansuConsumerThread(GuardedConsumerThread):
    """faust's aiokafka consumer thread whose changelog end offsets come from a fetch response."""

    async def _highwaters(self, partitions) -> Mapping:
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in self.transport.url)
        ends = await fetched_end_offsets(bootstrap, partitions)
        return {tp: ends[(tp.topic, tp.partition)] for tp in partitions}
