"""Scale-out where the LLMs are the bottleneck: products/s with 1 worker, then with 3 in one group.

    python bench/scaleout.py [--products 1200] [--in-flight 8] [--latency-ms 500] [--json]

Each run is a fresh deployment on loopback (broker, simulator, workers as real processes): three simulated
LLMs that answer every request in exactly ``--latency-ms`` (no faults), each worker limited to ``--in-flight``
products at a time (``concurrency``), 12 partitions (4 per worker at 3). The products are published once the
workers' group has settled (one generation, every partition held: joins are not measured); the clock runs
from the first decision to the last. One worker can then decide at most ``in_flight / latency`` products per second, so the ratio shows whether adding workers adds
throughput. The baseline is the 1-worker run of the same invocation; the last line is JSON with both rates
and ``ratio`` (3 workers / 1 worker).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline import load_products  # noqa: E402
from streams.harness.brokers.choice import start_local_broker  # noqa: E402
from streams.harness.stack import LocalStack  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "llmens_core" / "data" / "demo_products.jsonl"


def sim_config(latency_ms: float) -> dict:
    latency = {"mean": latency_ms, "p99": latency_ms}  # p99 = mean: every answer takes exactly this long
    faults = {"http_429": 0.0, "http_500": 0.0, "hang": 0.0, "malformed": 0.0, "out_of_schema": 0.0}
    return {"mode": "confusion", "seed": 7, "defaults": {"latency_ms": latency, "faults": faults},
            "models": [{"name": f"sim-{n}", "family": f"sim-{n}", "accuracy": a, "latency_ms": latency,
                        "price_in_per_1k": 0.001, "price_out_per_1k": 0.002}
                       for n, a in (("a", 0.9), ("b", 0.8), ("c", 0.7))]}


def wait_settled(stack: LocalStack, workers: int, partitions: int, timeout_s: float = 180) -> None:
    """Until every worker is in the same generation and they hold every input partition between them."""
    topic = stack.topic("product_updates")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            generations = {stack.worker_json(i, "/healthz")["generation"] for i in range(workers)}
            held = [[p for p in stack.worker_json(i, "/counters")["partitions"]["assigned"]
                     if p.startswith(topic + ":")] for i in range(workers)]
        except (OSError, KeyError, ValueError):
            held, generations = [], set()
        if len(generations) == 1 and held and all(held) and len({p for h in held for p in h}) == partitions:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{workers} workers did not settle on {partitions} partitions")


def run(workers: int, products: list[dict], args, broker, tmp: Path, log) -> dict:
    want = {(p["product_id"], p["version"], a) for p in products for a in p["attributes"]}
    stack = LocalStack(tmp / f"w{workers}", broker=broker, workers=0, partitions=12,
                       topic_prefix=f"scale{workers}.", sim_config=sim_config(args.latency_ms),
                       endpoint_overrides={"max_concurrency": 256},
                       settings_overrides={"concurrency": args.in_flight,
                                           "topics": {"partitions": 12, "model_partitions": 2}})
    try:
        stack.start()
        for i in range(workers):
            stack.start_worker(i)
        for i in range(workers):
            stack.wait_worker_ready(i, timeout_s=120)
        wait_settled(stack, workers, 12)  # the rebalances of joining workers are not what is measured
        stack.publish(products)
        decisions = stack.decisions(want, timeout_s=args.timeout)
        stamps = [d["decided_at"] for d in decisions]
        seconds = max(stamps) - min(stamps)  # first to last decision: group joins and model loading excluded
        decided = len({(d["product_id"], d["version"], d["attribute"]) for d in decisions} & want)
        rate = len(products) / seconds
        log(f"{workers} worker(s): {len(products)} products in {seconds:.1f} s = {rate:.1f} products/s "
            f"({decided}/{len(want)} decisions)")
        return {"workers": workers, "seconds": round(seconds, 1), "products_per_s": round(rate, 2),
                "decided": decided, "wanted": len(want)}
    finally:
        stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=1200)
    ap.add_argument("--in-flight", type=int, default=8, help="products in flight per worker (concurrency)")
    ap.add_argument("--latency-ms", type=float, default=500.0, help="every simulated LLM answer takes this long")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true", help="(the last line is JSON in any case)")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    products = [{k: v for k, v in p.items() if k != "gold"}
                for p in load_products(DEMO, None, -(-args.products // 400))][:args.products]
    log(f"ceiling per worker: {args.in_flight} in flight / {args.latency_ms:.0f} ms = "
        f"{args.in_flight / args.latency_ms * 1000:.1f} products/s")
    with tempfile.TemporaryDirectory(prefix="llmens-scaleout-") as tmp:
        broker = start_local_broker(Path(tmp) / "broker")
        try:
            one = run(1, products, args, broker, Path(tmp), log)
            three = run(3, products, args, broker, Path(tmp), log)
        finally:
            broker.stop()
    ratio = three["products_per_s"] / one["products_per_s"]
    print(orjson.dumps({"products": len(products), "in_flight_per_worker": args.in_flight,
                        "llm_latency_ms": args.latency_ms, "one_worker": one, "three_workers": three,
                        "ratio": round(ratio, 2)}).decode())


if __name__ == "__main__":
    main()
