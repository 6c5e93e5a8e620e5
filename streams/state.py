"""Where a worker keeps each product's latest version and decisions: the ``products`` table.

:class:`TableStore` is the worker's: a faust table on RocksDB with a changelog topic. :class:`RocksStore`
is a plain RocksDB (rocksdict) store for running the decider in-process, without a faust worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import orjson

__all__ = ["ProductStore", "RocksStore", "TableStore"]


class ProductStore(Protocol):
    """product_id -> ``{"version": v, "decisions": {attribute: AttributeDecision JSON}, "gold": {...}}``."""

    def get(self, product_id: str) -> dict | None: ...

    def put(self, product_id: str, state: dict) -> None:
        """Store ``state`` (buffered: for state whose loss a redelivery repairs)."""

    async def save(self, product_id: str, state: dict, partition: int) -> None:
        """Store ``state`` and return once it is durable, before anything derived from it is emitted."""


class TableStore:
    """The ``products`` faust table; :meth:`save` waits until its changelog record is delivered.

    faust's ``table[key] = value`` buffers the changelog record with ``send_soon``, which a SIGKILL loses
    while the awaited outputs were already out: a redelivered event would then be decided again under a
    newer model. So decisions are emitted only after :meth:`save`.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, product_id: str) -> dict | None:
        return self.table.get(product_id)

    def put(self, product_id: str, state: dict) -> None:
        self.table[product_id] = state

    async def save(self, product_id: str, state: dict, partition: int) -> None:
        t = self.table
        t.data[product_id] = state
        delivered = await t.changelog_topic.send(
            key=product_id, value=state, partition=partition, key_serializer=t.key_serializer,
            value_serializer=t.value_serializer, callback=t._on_changelog_sent)
        await delivered


class RocksStore:
    """Product state in a RocksDB directory of its own (synchronous writes, so :meth:`save` is durable)."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Rdict

        self.db = Rdict(str(path))

    def get(self, product_id: str) -> dict | None:
        raw = self.db.get(product_id.encode())
        return None if raw is None else orjson.loads(raw)

    def put(self, product_id: str, state: dict) -> None:
        self.db[product_id.encode()] = orjson.dumps(state)

    async def save(self, product_id: str, state: dict, partition: int) -> None:
        self.put(product_id, state)

    def close(self) -> None:
        self.db.close()
