"""Response cache in RocksDB (rocksdict): the same product text never pays twice, across restarts.

Key = (endpoint model, prompt version, sha256 of the product content); value = the raw answer text and
its usage. Only answers that parsed as JSON are stored (a malformed answer is retried, not cached).

Blocking: rocksdict ``get``/``put`` of a small value are microsecond-scale (memtable/block-cache hits,
WAL append without fsync), far below one event-loop tick, so they are called inline rather than
offloaded to a thread (a thread hop costs more than the call). ``close`` flushes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from rocksdict import BlockBasedOptions, Cache, Options, Rdict

__all__ = ["CachedResponse", "ResponseCache", "cache_key", "content_hash"]


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(model: str, prompt_version: str, content_sha256: str) -> bytes:
    return orjson.dumps([model, prompt_version, content_sha256])


@dataclass(frozen=True)
class CachedResponse:
    text: str
    tokens_in: int
    tokens_out: int


class ResponseCache:
    """A RocksDB directory; open one per process (RocksDB locks it)."""

    def __init__(self, path: str | Path, *, write_buffer_mib: int | None = None, max_write_buffers: int | None = None,
                 block_cache_mib: int | None = None):
        """``write_buffer_mib``, ``max_write_buffers``, ``block_cache_mib`` bound RocksDB's memory (None: its
        defaults); without a bound the memtable grows with every response until it reaches 64 MiB."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        if write_buffer_mib is not None:
            opts.set_write_buffer_size(write_buffer_mib << 20)
        if max_write_buffers is not None:
            opts.set_max_write_buffer_number(max_write_buffers)
        if block_cache_mib is not None:
            table = BlockBasedOptions()
            table.set_block_cache(Cache(block_cache_mib << 20))
            opts.set_block_based_table_factory(table)
        self._db: Rdict | None = Rdict(str(self.path), options=opts)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def get(self, model: str, prompt_version: str, content_sha256: str) -> CachedResponse | None:
        if self._db is None:
            return None
        raw = self._db.get(cache_key(model, prompt_version, content_sha256))
        if raw is None:
            self.misses += 1
            return None
        try:
            d = orjson.loads(raw)
            out = CachedResponse(d["text"], int(d["in"]), int(d["out"]))
        except Exception:
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, model: str, prompt_version: str, content_sha256: str, text: str, tokens_in: int,
            tokens_out: int) -> None:
        if self._db is None:
            return
        self._db[cache_key(model, prompt_version, content_sha256)] = orjson.dumps(
            {"text": text, "in": tokens_in, "out": tokens_out})

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return sum(1 for _ in self._db.keys())  # noqa: SIM118 - Rdict iterates items

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.flush()
            finally:
                self._db.close()
                self._db = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
