"""A worker's memory does not grow with what it has stored: RocksDB is bounded, and /debug/memory says who holds what.

A 10,000-product soak grew each worker's RSS by 14-16 % per 10,000 products while, besides the revision
window, the response cache's and the products table's memtables (faust's default: 64 MiB each, up to 3, per
partition) filled with every product. These tests hold the bounds where the data is written.
"""

from __future__ import annotations

import pytest

from llmens_core.llm.cache import ResponseCache
from streams.app import create_app
from streams.memory import memory_report, rocksdb_bytes
from streams.settings import Settings, StateSettings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("LLMENS_")]:
        monkeypatch.delenv(name)


def _fill(cache: ResponseCache, n: int) -> None:
    for i in range(n):
        cache.put("m", "v1", f"{i:064x}", "x" * 200, 10, 5)


def test_the_response_cache_memtables_stay_within_their_bound_however_much_is_written(tmp_path):
    bounded = ResponseCache(tmp_path / "bounded", write_buffer_mib=1, max_write_buffers=2, block_cache_mib=1)
    unbounded = ResponseCache(tmp_path / "default")
    _fill(bounded, 30_000)  # ~9 MiB of responses
    _fill(unbounded, 30_000)
    held = rocksdb_bytes([bounded._db])["memtables"] / 2**20
    held_by_default = rocksdb_bytes([unbounded._db])["memtables"] / 2**20
    assert held_by_default > 6  # RocksDB's default keeps every response in memory at this size
    assert held <= 2.5, held
    assert bounded.get("m", "v1", f"{7:064x}").text == "x" * 200  # flushed responses are still found
    bounded.close()
    unbounded.close()


def test_the_products_table_gets_the_bounded_rocksdb_options(tmp_path):
    llm = {"name": "a", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "a"}
    st = Settings(llms=[llm], data_dir=tmp_path / "data", kafka={"bootstrap": "127.0.0.1:1"},
                  state={"write_buffer_mib": 2, "block_cache_mib": 3})
    app, worker = create_app(st)
    options = app.tables["products"].options
    assert options["write_buffer_size"] == 2 << 20 and options["block_cache_size"] == 3 << 20
    assert options["max_write_buffer_number"] == StateSettings().max_write_buffers
    assert "/debug/memory" in {p.rstrip("/") for p in app.web.views}
    report = memory_report(app, worker)
    assert report["rss_mib"] > 0 and report["python"]["revision_window_items"] == 0
    assert report["rocksdb"]["products"]["partitions"] == 0  # no partition assigned, no database open
    worker.metrics.close()
