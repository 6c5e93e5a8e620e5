"""End-to-end benchmark: embedded broker + simulated LLMs + N llmens workers, against the raw aiohttp ceiling.

    python bench/pipeline.py --products FILE [--replay PREDICTIONS | --confusion CONFIG]
                             [--workers N] [--latency-ms 50] [--broker kafka|tansu|both] [--json]

Publishes every product, waits for every decision, prints one JSON summary line, then last
``pipeline_vs_ceiling=<products/s divided by (raw requests/s / models)>``. The ceiling is measured in the
same run against the same simulator by a minimal aiohttp client that sends the pipeline's own requests (every
product's prompt for every model, built as the gateway builds them) with as many in flight as one worker
(256 products x 5 LLMs), with no Kafka and no aggregation.

Latency per decision, two parts: ``overhead_ms`` is the time from the event reaching the worker's handler to
the decision, minus the time spent waiting on LLMs (our CPU work and any event-loop queueing in between);
``decided_to_output_ms`` is the time from the decision to its output record's CreateTime (the state record
is acknowledged by the broker first, see docs/delivery.md).

``--broker both`` runs the same benchmark on Apache Kafka and on Tansu, one after the other, and ends with
``kafka_vs_tansu=<products/s on Kafka divided by products/s on Tansu>``.
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

from llmens_core.llm.simulator import endpoints_for, load_sim_config  # noqa: E402
from llmens_core.scoring import gold_labels, recorded_attributes, score_decisions  # noqa: E402
from streams.harness.stack import LocalStack, replay_models  # noqa: E402


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


def request_bodies(products: list[dict], endpoints) -> list[bytes]:
    """The chat requests the workers send for these products: one per (product, LLM), built as the gateway does."""
    from llmens_core.events import ProductUpdate
    from llmens_core.llm.prompts import build_prompt
    from llmens_core.llm.providers import PROVIDERS
    from llmens_core.schema import AttributeSchema

    schema = AttributeSchema.load()
    out = []
    for p in products:
        update = ProductUpdate.model_validate(p)
        attrs = [schema[a] for a in p["attributes"] if a in schema]
        out += [orjson.dumps(PROVIDERS[ep.provider].body(ep, build_prompt(update, attrs, ep.prompt))) for ep in endpoints]
    return out


async def raw_ceiling(url: str, bodies: list[bytes], seconds: float = 4.0, concurrency: int = 1280) -> float:
    """Requests/s of a minimal aiohttp client sending the pipeline's own requests (no Kafka, no aggregation).

    ``concurrency``: requests in flight (1280 = 256 products x 5 LLMs saturates the simulator; more only overflows
    its listen backlog).
    """
    import aiohttp

    done = 0
    stop = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def loop(session, i):
        nonlocal done
        n = i
        while time.perf_counter() < stop:
            async with session.post(f"{url}/chat/completions", data=bodies[n % len(bodies)], headers=headers) as r:
                await r.read()
                done += 1
            n += concurrency

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
    ap.add_argument("--concurrency", type=int, default=256, help="products in flight per worker (setting)")
    ap.add_argument("--save", type=Path, help="write every decision (JSON lines) here for later analysis")
    ap.add_argument("--json", action="store_true", help="only the JSON summary line and the ratio line")
    ap.add_argument("--broker", choices=("kafka", "tansu", "both"), default=None,
                    help="local broker (default: Apache Kafka where Java 17+ is present, else Tansu)")
    args = ap.parse_args()
    if args.broker != "both":
        summary = run(args, args.broker)
        print(f"pipeline_vs_ceiling={summary['pipeline_vs_ceiling']:.3f}")
        return
    rates = {kind: run(args, kind)["products_per_s"] for kind in ("kafka", "tansu")}
    print(f"kafka_products_per_s={rates['kafka']} tansu_products_per_s={rates['tansu']}")
    print(f"kafka_vs_tansu={rates['kafka'] / rates['tansu']:.3f}")


def run(args: argparse.Namespace, broker: str | None) -> dict:
    """One benchmark run on ``broker``; prints and returns its JSON summary."""
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
        Path(tmp), workers=args.workers, sim_config=sim, partitions=args.partitions, prefer_broker=broker,
        endpoint_overrides={"max_concurrency": max(512, args.concurrency), "timeout_s": 10},
        settings_overrides={"concurrency": args.concurrency},
    ) as stack:
        broker_name = f"{stack.broker.name} {stack.broker.version}"
        say(f"stack up: {broker_name} at {stack.bootstrap}, simulator {stack.sim_url}, {args.workers} worker(s)")
        t0 = time.perf_counter()
        stack.publish(products)
        want = {(p["product_id"], p["version"], a) for p in products for a in p["attributes"]}
        decisions = stack.decisions(want, timeout_s=600)
        elapsed = time.perf_counter() - t0
        decisions += stack.decisions(want, timeout_s=30, settle_s=2.0)[len(decisions):]  # late revisions
        out_ts = {}  # (product, attribute) -> when the first decision record was produced (CreateTime)
        for msg in stack.read("product_attributes", idle_s=1.0, timeout_s=60):
            d = orjson.loads(msg.value())
            out_ts.setdefault((d["product_id"], d["attribute"]), msg.timestamp()[1] / 1000)
        dlq = len(stack.read("dead_letter", idle_s=1.0, timeout_s=5))
        calls = sum(c.get("requests", 0) for i in stack.procs
                    for c in stack.worker_json(i, "/counters")["llm"].values())
        ceiling = asyncio.run(raw_ceiling(stack.sim_url, request_bodies(
            products, endpoints_for(load_sim_config(stack.sim_config_path), stack.sim_url)),
            concurrency=min(1280, args.concurrency * len(models))))

    if args.save:
        args.save.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in decisions))
    first = [d for d in decisions if d["revision"] == 0]
    overhead_ms = np.array([(d["processing_seconds"] - d["llm_seconds"]) * 1000 for d in first])
    emit_ms = np.array([(out_ts[(d["product_id"], d["attribute"])] - d["decided_at"]) * 1000 for d in first
                        if (d["product_id"], d["attribute"]) in out_ts])
    products_per_s = len({d["product_id"] for d in first}) / elapsed
    summary = {
        "products": len(products), "decisions": len(first), "expected_decisions": expected,
        "unique_decisions": len({(d["product_id"], d["version"], d["attribute"]) for d in first}),
        "revisions": len(decisions) - len(first),
        "accuracy": score_decisions(decisions, gold), "products_per_s": round(products_per_s, 1),
        "seconds": round(elapsed, 2), "llm_calls": calls, "models": len(models), "workers": args.workers,
        "overhead_ms_p50": round(float(np.percentile(overhead_ms, 50)), 2) if len(overhead_ms) else None,
        "overhead_ms_p99": round(float(np.percentile(overhead_ms, 99)), 2) if len(overhead_ms) else None,
        "decided_to_output_ms_p50": round(float(np.percentile(emit_ms, 50)), 2) if len(emit_ms) else None,
        "decided_to_output_ms_p99": round(float(np.percentile(emit_ms, 99)), 2) if len(emit_ms) else None,
        "dlq": dlq, "raw_requests_per_s": round(ceiling, 1), "latency_ms": args.latency_ms,
        "broker": broker_name, "pipeline_vs_ceiling": round(products_per_s / (ceiling / len(models)), 3),
    }
    print(orjson.dumps(summary).decode())
    return summary


if __name__ == "__main__":
    main()
