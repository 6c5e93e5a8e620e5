"""End-to-end benchmark: embedded broker + simulated LLMs + N llmens workers, against the raw aiohttp ceiling.

    python bench/pipeline.py --products FILE [--replay PREDICTIONS | --confusion CONFIG]
                             [--workers N] [--latency-ms 50] [--json]

Publishes every product, waits for every decision, prints one JSON summary line, then last
``pipeline_vs_ceiling=<products/s divided by (raw requests/s / models)>``. The ceiling is measured in the
same run against the same simulator by a minimal aiohttp client with no Kafka and no aggregation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmens_core.llm.simulator import load_sim_config  # noqa: E402
from llmens_core.scoring import gold_labels, recorded_attributes, score_decisions  # noqa: E402
from streams.stack import LocalStack, replay_models  # noqa: E402


def load_products(path: Path, predictions: Path | None, copies: int = 1) -> list[dict]:
    """Product events (attributes = the annotated ones, or those with recorded predictions) with gold kept aside."""
    recs = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    asked = recorded_attributes(predictions) if predictions is not None else {}
    out = []
    for c in range(copies):
        for r in recs:
            attrs = sorted(asked.get(r["product_id"], ())) or sorted(r.get("attributes") or {})
            if not attrs:
                continue
            pid = r["product_id"] if c == 0 else f"{r['product_id']}~{c}"
            desc = r.get("description") if c == 0 else f"{r.get('description') or ''} [copy {c}]"
            out.append({"product_id": pid, "version": 1, "title": r["title"], "description": desc,
                        "category": r.get("category"), "attributes": attrs, "gold": r.get("attributes") or {}})
    return out


async def raw_ceiling(url: str, models: list[str], seconds: float = 4.0, concurrency: int = 256) -> float:
    """Requests/s of a minimal aiohttp client against the simulator (same prompt shape, no machinery)."""
    import aiohttp

    body = {"messages": [{"role": "user", "content": "Product: {\"title\": \"Men's running shoe\"}\n"
                          "Attributes: gender"}], "temperature": 0}
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(session, i):
        nonlocal done
        while time.perf_counter() < stop:
            async with session.post(f"{url}/chat/completions",
                                    json={**body, "model": models[i % len(models)]}) as r:
                await r.read()
                done += 1

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(s, i) for i in range(concurrency)))
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=Path, required=True)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--replay", type=Path, help="predictions JSONL: replay recorded LLM outputs")
    g.add_argument("--confusion", type=Path, help="simulator config (confusion mode)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--copies", type=int, default=1, help="publish the catalogue this many times (new ids)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--save", type=Path, help="write every decision (JSON lines) here for later analysis")
    ap.add_argument("--json", action="store_true", help="only the JSON summary line and the ratio line")
    args = ap.parse_args()

    sim = load_sim_config(args.confusion).model_dump(mode="json")
    if args.replay is not None:
        sim["mode"], sim["predictions"] = "replay", str(args.replay)
        sim["models"] = replay_models(args.replay, [])
    else:
        sim["products"] = str(args.products)
    lat = {"mean": args.latency_ms, "p99": args.latency_ms * 1.5}
    sim["defaults"] = {**sim.get("defaults", {}), "latency_ms": lat,
                       "faults": {"http_429": 0, "http_500": 0, "malformed": 0, "out_of_schema": 0}}
    for m in sim["models"]:
        m["latency_ms"] = lat
        m["faults"] = None
    products = load_products(args.products, args.replay, args.copies)
    gold = gold_labels({"product_id": p["product_id"], "attributes": p.pop("gold")} for p in products)
    expected = sum(len(p["attributes"]) for p in products)
    models = [m["name"] for m in sim["models"]]
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

    with tempfile.TemporaryDirectory(prefix="llmens-bench-") as tmp, LocalStack(
        Path(tmp), workers=args.workers, sim_config=sim, partitions=args.partitions,
        endpoint_overrides={"max_concurrency": 512, "timeout_s": 10},
    ) as stack:
        say(f"stack up: broker {stack.bootstrap}, simulator {stack.sim_url}, {args.workers} worker(s)")
        t0 = time.perf_counter()
        stack.publish(products)
        want = {(p["product_id"], p["version"], a) for p in products for a in p["attributes"]}
        decisions = stack.decisions(want, timeout_s=600)
        elapsed = time.perf_counter() - t0
        decisions += stack.decisions(want, timeout_s=30, settle_s=2.0)[len(decisions):]  # late revisions
        dlq = len(stack.read("dead_letter", idle_s=1.0, timeout_s=5))
        calls = sum(c.get("requests", 0) for i in stack.procs
                    for c in stack.worker_json(i, "/counters")["llm"].values())
        ceiling = asyncio.run(raw_ceiling(stack.sim_url, models))

    if args.save:
        args.save.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in decisions))
    first = [d for d in decisions if d["revision"] == 0]
    overhead_ms = np.array([(d["processing_seconds"] - d["llm_seconds"]) * 1000 for d in first])
    products_per_s = len({d["product_id"] for d in first}) / elapsed
    summary = {
        "products": len(products), "decisions": len(first), "expected_decisions": expected,
        "unique_decisions": len({(d["product_id"], d["version"], d["attribute"]) for d in first}),
        "revisions": len(decisions) - len(first),
        "accuracy": score_decisions(decisions, gold), "products_per_s": round(products_per_s, 1),
        "seconds": round(elapsed, 2), "llm_calls": calls, "models": len(models), "workers": args.workers,
        "overhead_ms_p50": round(float(np.percentile(overhead_ms, 50)), 2) if len(overhead_ms) else None,
        "overhead_ms_p99": round(float(np.percentile(overhead_ms, 99)), 2) if len(overhead_ms) else None,
        "dlq": dlq, "raw_requests_per_s": round(ceiling, 1), "latency_ms": args.latency_ms,
    }
    print(orjson.dumps(summary).decode())
    print(f"pipeline_vs_ceiling={products_per_s / (ceiling / len(models)):.3f}")


if __name__ == "__main__":
    main()
