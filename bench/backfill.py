"""Backfill through the batch APIs against the streaming path, on the same products and the same simulated LLMs.

    python bench/backfill.py [--products ../shared/data/products/products.jsonl] [--latency-ms 20] [--quick-fit]

One local stack (broker, the 5 built-in simulated models, one worker): the products are published and the
stream decides them (its price: the dollars the worker's gateway counted, ``EndpointCounters.cost_usd``, at list
price); then ``llmens backfill`` runs the same products through the simulator's OpenAI Batch API, on topics of
their own (prefix ``bf.``), and its price is what it counted (the same token usage x list price x each LLM's
``batch_discount``, 0.5 by default). Both see the same faults (0.5% malformed and 0.5% out-of-schema answers; no
HTTP errors, so the stream is not slowed by Retry-After pauses). Accuracy is against the gold labels of the
products file (null = "none"), over every scored decision (the stream's latest revision of each).

Prints, for both paths: products decided, decisions, price, accuracy; last line
``backfill_vs_stream_price=<backfill $ / stream $> accuracy_delta=<backfill - stream, in points>``.
Skips with a message when the products file (../shared/data) is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmens_core.backfill import BackfillState  # noqa: E402
from llmens_core.llm.simulator import load_sim_config  # noqa: E402
from llmens_core.scoring import gold_labels, score_decisions  # noqa: E402
from streams.harness.stack import LocalStack  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

DEFAULT_PRODUCTS = REPO / ".." / "shared" / "data" / "products" / "products.jsonl"


def load(path: Path) -> tuple[list[dict], dict]:
    """Product events asking their annotated attributes, and the gold labels kept aside."""
    recs = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    products = [{"product_id": r["product_id"], "version": 1, "title": r["title"], "description": r.get("description"),
                 "category": r.get("category"), "attributes": sorted(r["attributes"])}
                for r in recs if r.get("attributes")]
    gold = gold_labels({"product_id": r["product_id"], "attributes": r["attributes"]} for r in recs if r.get("attributes"))
    return products, gold


def sim_config(products: Path, latency_ms: float) -> dict:
    sim = load_sim_config(None).model_dump(mode="json")
    sim["products"] = str(products)
    sim["batch_seconds"] = 2.0
    lat = {"mean": latency_ms, "p99": latency_ms * 1.5}
    sim["defaults"] = {"latency_ms": lat, "faults": {"http_429": 0, "http_500": 0, "malformed": 0.005,
                                                     "out_of_schema": 0.005}}
    for m in sim["models"]:
        m["latency_ms"], m["faults"] = lat, None
    return sim


def accuracy(decisions: list[dict], gold: dict) -> float:
    """Share of scored decisions that are right, over every attribute (weighted by the items scored)."""
    rows = score_decisions(decisions, gold).values()
    n = sum(r["n"] for r in rows)
    return sum(r["ensemble"] * r["n"] for r in rows) / n if n else float("nan")


def run_stream(stack: LocalStack, products: list[dict]) -> tuple[list[dict], float, float]:
    """(decisions, dollars the worker's gateway counted, seconds)."""
    t0 = time.perf_counter()
    stack.publish(products)
    want = {(p["product_id"], 1, a) for p in products for a in p["attributes"]}
    decisions = stack.decisions(want, timeout_s=1800, settle_s=3.0)
    seconds = time.perf_counter() - t0
    usd = sum(c.get("cost_usd", 0.0) for i in stack.procs for c in stack.worker_json(i, "/counters")["llm"].values())
    return decisions, usd, seconds


def run_backfill(stack: LocalStack, products: list[dict], work: Path, quick_fit: bool) -> tuple[list[dict], float,
                                                                                                  float, str]:
    """``llmens backfill`` on topics of its own; (decisions, dollars it counted, seconds, its last output line)."""
    catalogue = work / "catalogue.jsonl"
    catalogue.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in products))
    raw = {**stack.config_data, "kafka": {**stack.config_data["kafka"], "topic_prefix": "bf.", "app_id": "bf.workers"}}
    config = work / "backfill.yaml"
    config.write_text(yaml.safe_dump(raw))
    ensure_topics(Settings(**raw))
    state = work / "backfill-state"
    cmd = [sys.executable, "-m", "streams.cli", "backfill", str(catalogue), "--state", str(state), "--poll", "1",
           "--batch-size", "500", "--quiet", "-c", str(config)] + (["--quick-fit"] if quick_fit else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"llmens backfill failed ({out.returncode}):\n{out.stderr[-3000:]}")
    decisions = [orjson.loads(x) for x in (state / "decisions.jsonl").read_bytes().splitlines() if x.strip()]
    usd = sum(u["cost_usd"] for u in BackfillState.load(state).usage().values())
    return decisions, usd, seconds, out.stderr.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=Path, default=DEFAULT_PRODUCTS)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--quick-fit", action="store_true", help="backfill with --quick-fit (smaller model search)")
    ap.add_argument("--workdir", type=Path, help="keep the run here (stream decisions, the backfill's state) "
                                                 "instead of a temporary directory")
    args = ap.parse_args()
    if not args.products.exists():
        print(f"skipped: {args.products} is absent (the team's ../shared/data development set)")
        return
    products, gold = load(args.products)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(args.workdir)) if args.workdir else
          tempfile.TemporaryDirectory(prefix="llmens-bench-backfill-")) as tmp, LocalStack(
        Path(tmp), workers=1, sim_config=sim_config(args.products, args.latency_ms), partitions=4,
        endpoint_overrides={"max_concurrency": 512, "timeout_s": 10}, settings_overrides={"concurrency": 256},
    ) as stack:
        s_dec, s_usd, s_sec = run_stream(stack, products)
        (Path(tmp) / "stream-decisions.jsonl").write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in s_dec))
        (Path(tmp) / "stream-usd.txt").write_text(repr(s_usd))
        b_dec, b_usd, b_sec, b_out = run_backfill(stack, products, Path(tmp), args.quick_fit)
    print(f"backfill says: {b_out.splitlines()[-1] if b_out else ''}")
    ids = {p["product_id"] for p in products}
    rows, usd_of, acc_of = {}, {}, {}
    for name, dec, usd, sec in (("stream", s_dec, s_usd, s_sec), ("backfill", b_dec, b_usd, b_sec)):
        decided = {d["product_id"] for d in dec if d.get("value") is not None} & ids
        usd_of[name], acc_of[name] = usd, accuracy(dec, gold)
        rows[name] = {"products": len(ids), "decided_products": len(decided), "decisions": len(dec),
                      "usd": round(usd, 4), "accuracy": round(accuracy(dec, gold), 4), "seconds": round(sec, 1)}
        print(f"{name}: " + orjson.dumps(rows[name]).decode())
    ratio = usd_of["backfill"] / usd_of["stream"]
    delta = 100 * (acc_of["backfill"] - acc_of["stream"])
    print(f"backfill_vs_stream_price={ratio:.4f} accuracy_delta={delta:+.2f}")


if __name__ == "__main__":
    main()
