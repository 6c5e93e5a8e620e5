"""What a worker's memory holds, by owner: RocksDB (memtables, block caches) and Python's own heap.

Served on ``/debug/memory`` and sampled by the soak (``bench/soak.py``), so growth over a long run is
attributed to a part, not guessed. RocksDB figures are its own properties (``rocksdb.cur-size-all-mem-tables``,
``rocksdb.block-cache-usage``) summed over the products table's per-partition databases and the response cache.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["memory_report", "rocksdb_bytes", "rss_mib"]

_PROPERTIES = {"memtables": "rocksdb.cur-size-all-mem-tables", "block_cache": "rocksdb.block-cache-usage",
               "keys": "rocksdb.estimate-num-keys"}


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of process ``pid`` in MiB (Linux /proc), NaN when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rocksdb_bytes(dbs: list[Any]) -> dict[str, int]:
    """Memtables, block-cache use and estimated keys summed over rocksdict databases ``dbs``."""
    out = dict.fromkeys(_PROPERTIES, 0)
    for db in dbs:
        for name, prop in _PROPERTIES.items():
            try:
                out[name] += int(db.property_int_value(prop) or 0)
            except Exception:  # noqa: BLE001 - a closed database or another driver: not counted
                pass
    return out


def _table_dbs(app: Any) -> dict[str, list[Any]]:
    """The open per-partition databases of each faust table (faust's RocksDB store keeps them in ``_dbs``)."""
    out = {}
    for name, table in app.tables.items():
        dbs = getattr(getattr(table, "data", None), "_dbs", None)
        if isinstance(dbs, dict):
            out[name] = list(dbs.values())
    return out


def memory_report(app: Any, worker: Any, top: int = 8) -> dict[str, Any]:
    """RSS, RocksDB per table and response cache (MiB, keys), Python objects; tracemalloc's top lines when on."""
    def mib(d: dict[str, int]) -> dict[str, float]:
        return {k: (v if k == "keys" else round(v / 2**20, 2)) for k, v in d.items()}

    rocks = {name: {"partitions": len(dbs), **mib(rocksdb_bytes(dbs))} for name, dbs in _table_dbs(app).items()}
    cache = getattr(worker.gateway, "cache", None)
    if cache is not None and getattr(cache, "_db", None) is not None:
        rocks["response_cache"] = {"partitions": 1, **mib(rocksdb_bytes([cache._db]))}
    report: dict[str, Any] = {
        "rss_mib": round(rss_mib(), 1), "rocksdb": rocks,
        "python": {"gc_objects": len(gc.get_objects()),
                   "revision_window_items": worker.revisions.size_items(),
                   "inflight": sum(worker.inflight.values())}}
    if tracemalloc.is_tracing():
        report["tracemalloc"] = _traced(top)
    return report


_baseline: list = []


def _traced(top: int) -> dict[str, Any]:
    """Python's traced memory: the lines holding most, and the lines grown most since the first report."""
    def where(frame: Any) -> str:
        return f"{'/'.join(frame.filename.rsplit('/', 2)[-2:])}:{frame.lineno}"

    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if not _baseline:
        _baseline.append(snapshot)
    current, peak = tracemalloc.get_traced_memory()
    return {"current_mib": round(current / 2**20, 1), "peak_mib": round(peak / 2**20, 1),
            "top": [f"{where(s.traceback[0])} {s.size / 2**20:.1f} MiB in {s.count}"
                    for s in snapshot.statistics("lineno")[:top]],
            "grown": [f"{where(d.traceback[0])} {d.size_diff / 2**20:+.1f} MiB ({d.count_diff:+d})"
                      for d in snapshot.compare_to(_baseline[0], "lineno")[:top]]}
