"""Soak: a long stream through three workers, with per-worker memory and RocksDB size sampled over time.

    python bench/soak.py [--products 100000] [--rate 150] [--json]

Products are variations of the demo catalogue with distinct text (each copy's description differs), published
at ``--rate`` per second to three workers with the simulated LLMs. Every 10 s it samples each worker's RSS
(/proc) and the size of its data directory (RocksDB tables and the response cache) against the decisions made
so far. At the end: every (product, version, attribute) must have a decision (``lost``) and the lag must be 0.
RSS slope: a straight line fitted to RSS against products decided after the warm-up (the first 20 %),
as % of the RSS at the end of the warm-up per 10,000 products. Each sample also reads the worker's
``/debug/memory`` (RocksDB memtables and block caches, Python objects, decisions held for revision), so growth
can be put down to a part: ``--memory-report FILE`` keeps every sample, ``--tracemalloc`` has the workers trace
Python allocations (slower) and report the lines grown most. The last line is JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.drills import DecisionClock, publisher_for, wait_lag_zero  # noqa: E402
from bench.pipeline import load_products  # noqa: E402
from streams.harness.stack import LocalStack  # noqa: E402
from streams.memory import rss_mib  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "llmens_core" / "data" / "demo_products.jsonl"


def rocksdb_mib(stack: LocalStack, i: int) -> tuple[float, dict]:
    """Worker ``i``'s RocksDB memory (memtables + block caches, MiB, all its databases) and its whole
    /debug/memory report; NaN when the page does not answer."""
    try:
        report = stack.worker_json(i, "/debug/memory")
    except (OSError, ValueError):
        return float("nan"), {}
    return sum(r["memtables"] + r["block_cache"] for r in report["rocksdb"].values()), report


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def slope_pct_per_10k(decided: list[int], rss: list[float], warmup: float = 0.2) -> float | None:
    """RSS growth per 10,000 products after the warm-up, as % of the RSS when the warm-up ended."""
    if len(decided) < 3:
        return None
    start = next((i for i, d in enumerate(decided) if d >= warmup * decided[-1]), 0)
    x, y = np.array(decided[start:], float), np.array(rss[start:], float)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * 10_000 / y[0] * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=150.0, help="products published per second")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the last decisions")
    ap.add_argument("--json", action="store_true", help="(the last line is JSON in any case)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="workers trace Python allocations (slower); /debug/memory then lists the top lines")
    ap.add_argument("--memory-report", type=Path, default=None,
                    help="write every sample and each worker's last /debug/memory report here (JSON)")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    products = [{k: v for k, v in p.items() if k != "gold"}
                for p in load_products(DEMO, None, -(-args.products // 400))][:args.products]
    want = {(p["product_id"], p["version"], a) for p in products for a in p["attributes"]}
    if args.tracemalloc:
        os.environ["PYTHONTRACEMALLOC"] = "1"  # inherited by the workers the stack starts
    with tempfile.TemporaryDirectory(prefix="llmens-soak-") as tmp:
        # production timings (60 s session): the local profile's 2 s session timeout rebalanced starved workers
        # 63 times in a 2,000-product trial on a loaded machine, and they decided nothing for minutes
        stack = LocalStack(Path(tmp) / "stack", workers=3, partitions=12, embedded=False,
                           settings_overrides={"topics": {"partitions": 12, "model_partitions": 2}})
        samples: dict[int, list] = {i: [] for i in range(3)}
        reports: dict[int, dict] = {}
        try:
            stack.start()
            clock = DecisionClock(stack.bootstrap, stack.topic("product_attributes"))
            clock.start()
            started = time.monotonic()
            publisher = publisher_for(stack, products, args.rate)
            publisher.start()
            per_product = len(want) / len(products)
            while True:
                decided = int(len(clock.arrivals) / per_product)
                for i, proc in stack.procs.items():
                    rocks, reports[i] = rocksdb_mib(stack, i)
                    samples[i].append((decided, rss_mib(proc.pid), dir_mib(stack.workdir / f"worker{i}"), rocks,
                                       reports[i].get("python", {})))
                last = [s[-1] for s in samples.values()]
                log(f"published {publisher.sent}, ~{decided} decided; RSS MiB "
                    f"{[round(s[1]) for s in last]}, RocksDB memory MiB {[round(s[3], 1) for s in last]}, "
                    f"data MiB {[round(s[2]) for s in last]}")
                if not publisher.is_alive() and decided >= len(products):
                    break
                if time.monotonic() - started > len(products) / args.rate + args.timeout:
                    log("timed out waiting for decisions")
                    break
                time.sleep(args.every)
            seconds = time.monotonic() - started
            decisions = stack.decisions(want, timeout_s=300)
            decided_keys = {(d["product_id"], d["version"], d["attribute"]) for d in decisions}
            lag = wait_lag_zero(stack, 120)
            clock.stopping.set()
        finally:
            stack.stop()
    result = {"products": len(products), "products_per_s": round(len(products) / seconds, 1),
              "seconds": round(seconds, 1), "lost": len(want - decided_keys), "final_lag": lag,
              "workers": {str(i): {"rss_start_mib": round(s[0][1], 1), "rss_end_mib": round(s[-1][1], 1),
                                   "rss_slope_pct_per_10k": (lambda v: None if v is None else round(v, 2))(
                                       slope_pct_per_10k([x[0] for x in s], [x[1] for x in s])),
                                   "rocksdb_mem_start_mib": round(s[0][3], 1), "rocksdb_mem_end_mib": round(s[-1][3], 1),
                                   "data_end_mib": round(s[-1][2], 1)} for i, s in samples.items()}}
    if args.memory_report:
        args.memory_report.write_bytes(orjson.dumps({"samples": samples, "last_reports": reports},
                                                    option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
