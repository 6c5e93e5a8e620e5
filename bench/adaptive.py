"""Adaptive querying vs full fan-out (issues 7, 14), same run, same data, through the real gateway over HTTP.

Datasets, each reported separately (``--data DIR`` has the layout of ../shared/data, the default):
(a) replay of ``DIR/llm_predictions`` (the 10 recorded GPT runs, made-up list prices: gpt-3.5 cheapest, then
gpt-4o, fine-tuned gpt-4o, gpt-4 most expensive); (b) the 5 built-in simulated models on ``DIR/products``
(their configured prices; latency ~0-5 ms, no faults); (c) when ``--real FILE`` exists (default
``llmens_core/data/real_llm_votes_oamine.jsonl``, shipped by the real-LLM work), a replay of the real local
LLMs' recorded votes (``llm-votes`` format) on the shipped OA-Mine demo products, with made-up prices by model
size (local models have no list price); absent, it is skipped with a message. One in-process simulator per
dataset on a free port.

Each mode (full, adaptive) runs its own online model per attribute (``default_online``) learning as it goes:
products are processed in chunks of ``--chunk`` concurrently; after each chunk the decided items' votes are
learnt with ``partial_fit``, as the stream's learner learns them (a young model's races run inline here, and are
adopted at once; the learner runs them aside). Every attribute of the
dataset has a (cold) model from the start, as the stream's ``ModelRegistry.get`` creates one on first use.
Full asks every LLM at once; adaptive asks ``AdaptivePolicy.plan(pid, models, attrs)`` stage by stage (only the
attributes still unsettled) until ``unsettled`` is empty (``--rule gain``, the default), or with ``--rule
confidence`` the previous behaviour: stages cheapest first until ``should_stop`` (max posterior >= ``--target``).
A call is one LLM request (one product, any number of attributes). The price is what the gateway counted:
the tokens each response reported (the simulator's usage) x the LLM's configured price per 1k input/output
tokens (``EndpointCounters.cost_usd``, what ``llmens_llm_cost_total`` exports), so a later stage asking fewer
attributes costs less than a full request. ``price_ratio`` = adaptive / full dollars (full fan-out = 1.0).
Accuracy is against gold (null = "none"; a missing key is not scored). Per dataset: calls, dollars per 1,000
decisions and accuracy of both modes, stop reasons, where adaptive lost or won decisions against full (by stop
reason, cold = first 10 chunks), the adaptive calls by stop reason, and
``[name] calls_ratio=... price_ratio=... accuracy_delta=<points>``. Last line, pooled over the datasets run
(calls and dollars summed, accuracy over all scored decisions):
``calls_ratio=<adaptive/full> price_ratio=<adaptive/full> accuracy_delta=<points>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmens_core.adaptive import AdaptivePolicy, ask_in_stages  # noqa: E402
from llmens_core.aggregation import OnlineDawidSkene, default_online  # noqa: E402
from llmens_core.decisions import StatsAccumulator, decide, votes_by_attribute  # noqa: E402
from llmens_core.events import ProductUpdate  # noqa: E402
from llmens_core.llm import Gateway  # noqa: E402
from llmens_core.llm.simulator import endpoints_for, load_sim_config, start_simulator  # noqa: E402
from llmens_core.schema import AttributeSchema  # noqa: E402
from llmens_core.scoring import gold_labels, recorded_attributes  # noqa: E402

SHARED = REPO / ".." / "shared" / "data"
REAL_VOTES = REPO / "llmens_core" / "data" / "real_llm_votes_oamine.jsonl"
DEMO_PRODUCTS = REPO / "llmens_core" / "data" / "demo_products.jsonl"


def replay_price(name: str) -> tuple[float, float]:
    """Made-up prices per 1k tokens (in, out) for the recorded models (the recordings carry none)."""
    if name.startswith("gpt-3.5"):
        p = (0.0005, 0.0015)
    elif name.startswith("gpt-4o"):
        p = (0.0025, 0.01)
    elif name.startswith("ft:gpt-4o"):
        p = (0.00375, 0.015)
    else:  # gpt-4
        p = (0.03, 0.06)
    return p


def real_price(name: str) -> tuple[float, float]:
    """Made-up prices per 1k tokens (in, out) for the local models of the real recording, by size."""
    if "1.5b" in name:
        return (0.0003, 0.0006)
    if "0.5b" in name:
        return (0.0001, 0.0002)
    return (0.00002, 0.0)  # an embedding classifier (minilm) or unknown: reads the input, generates nothing


def votes_to_predictions(votes: Path, out: Path) -> list[str]:
    """Write ``llm-votes`` records (one JSON list of LabelVotes per line) as a replay predictions JSONL.

    A vote with a label becomes ``{product_id, attribute, model, value}`` (``"none"`` -> null); an abstention or a
    failed call (label null) is left out, so the replayed LLM does not answer that attribute. Returns the LLMs.
    """
    llms: set[str] = set()
    with out.open("wb") as f:
        for line in votes.read_bytes().splitlines():
            if not line.strip():
                continue
            for v in orjson.loads(line):
                if v.get("label") is None or v.get("error"):
                    continue
                llms.add(v["llm"])
                f.write(orjson.dumps({"product_id": v["product_id"], "attribute": v["attribute"], "model": v["llm"],
                                      "value": None if v["label"] == "none" else v["label"]}) + b"\n")
    return sorted(llms)


def replay_config(predictions: Path, products: Path, names: list[str], price, no_wait: dict) -> dict:
    return {"mode": "replay", "predictions": str(predictions), "products": str(products), "defaults": no_wait,
            "models": [{"name": n, "family": n.split("|")[0], "accuracy": 1.0, "price_in_per_1k": price(n)[0],
                        "price_out_per_1k": price(n)[1], "latency_ms": no_wait["latency_ms"]} for n in names]}


def load(path: Path, predictions: Path | None, schema: AttributeSchema, limit: int | None):
    recs = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    asked = recorded_attributes(predictions) if predictions is not None else {}
    out = []
    for r in recs:
        attrs = sorted(asked.get(r["product_id"], ())) if predictions else sorted(r.get("attributes") or {})
        attrs = [a for a in attrs if a in schema]
        if attrs:
            out.append((ProductUpdate(product_id=r["product_id"], version=1, title=r["title"],
                                      description=r.get("description"), category=r.get("category"),
                                      attributes=attrs), attrs))
    gold = gold_labels(recs)
    return (out[:limit] if limit else out), gold


class _Models(dict):
    """attribute -> online model, created on first use with the schema's label set (cold = the prior)."""

    def __init__(self, schema: AttributeSchema):
        super().__init__()
        self.schema = schema

    def __missing__(self, a: str) -> OnlineDawidSkene:
        m = self[a] = default_online(list(self.schema[a].classes))
        return m


class Learner:
    def __init__(self, flush: int, schema: AttributeSchema, attributes=()):
        self.models: dict[str, OnlineDawidSkene] = _Models(schema)
        for a in attributes:  # cold models up front, as the stream's registry hands out on first use
            self.models[a]
        self.acc = StatsAccumulator(flush_items=flush)

    def add(self, pid: str, votes: dict[str, dict]) -> None:
        for a, v in votes.items():
            self.acc.add(a, pid, v)

    def flush(self) -> None:
        for a in self.acc.attributes():
            votes = self.acc.take_votes(a)
            if votes is not None:
                self.models[a].partial_fit(*votes)


async def run_full(gw: Gateway, products, learner: Learner, chunk: int):
    decisions, calls = [], 0

    async def one(p, attrs):
        return p, attrs, await gw.label(p, attrs)

    for s in range(0, len(products), chunk):
        for p, attrs, votes in await asyncio.gather(*(one(p, a) for p, a in products[s : s + chunk])):
            calls += len({v.llm for v in votes})
            by = votes_by_attribute(votes)
            for a in attrs:
                d, _ = decide(p.product_id, 1, a, by.get(a, {}), learner.models[a], reason="complete")
                decisions.append(d.model_dump())
            learner.add(p.product_id, by)
        await asyncio.to_thread(learner.flush)  # races take seconds of CPU
    return decisions, calls


async def run_adaptive(gw: Gateway, products, learner: Learner, policy: AdaptivePolicy, chunk: int, rule: str):
    decisions, calls, reasons, asked_by = [], 0, defaultdict(int), {}

    async def one(p, attrs):
        _, by, asked, why = await ask_in_stages(policy, lambda todo, llms: gw.label(p, todo, llms=llms),
                                                p.product_id, attrs, learner.models, rule=rule)
        return p, attrs, by, asked, why

    for s in range(0, len(products), chunk):
        for p, attrs, by, asked, why in await asyncio.gather(*(one(p, a) for p, a in products[s : s + chunk])):
            calls += len(asked)
            reasons[why] += 1
            asked_by[p.product_id] = (list(asked), why, s // chunk)
            for a in attrs:
                d, _ = decide(p.product_id, 1, a, by.get(a, {}), learner.models[a],
                              reason="complete" if why == "explore" else "adaptive", asked=asked)
                decisions.append(d.model_dump())
            learner.add(p.product_id, by)
        await asyncio.to_thread(learner.flush)
    return decisions, calls, dict(reasons), asked_by


def accuracy(decisions, gold) -> tuple[int, int]:
    ok = n = 0
    for d in decisions:
        g = gold.get((d["product_id"], d["attribute"]))
        if g is not None:
            n += 1
            ok += d["value"] == g
    return ok, n


def where(dec_f, dec_a, gold, asked_by) -> dict:
    """Adaptive minus full correct decisions and adaptive calls, by stop reason and by phase (cold = the first 10
    chunks), and the first two LLMs asked most often."""
    full = {(d["product_id"], d["attribute"]): d["value"] for d in dec_f}
    out: dict = {"lost": defaultdict(int), "calls": defaultdict(int), "first": defaultdict(int)}
    for asked, why, chunk_no in asked_by.values():
        out["calls"][why] += len(asked)
        out["calls"]["cold" if chunk_no < 10 else "warm"] += len(asked)
        if why != "explore":
            out["first"][" + ".join(asked[:2])] += 1
    for d in dec_a:
        g = gold.get((d["product_id"], d["attribute"]))
        if g is None:
            continue
        _, why, chunk_no = asked_by[d["product_id"]]
        diff = int(full[(d["product_id"], d["attribute"])] == g) - int(d["value"] == g)
        for k in (why, "cold" if chunk_no < 10 else "warm", d["attribute"]):
            out["lost"][k] += diff
    return out


def spent(gw: Gateway) -> float:
    """Dollars the gateway has counted so far over all its LLMs (measured tokens x configured prices)."""
    return sum(c.cost_usd for c in gw.counters().values())


async def dataset(name: str, sim: dict, products, gold, schema, args) -> dict:
    runner, port = await start_simulator(sim)
    try:
        eps = endpoints_for(load_sim_config(sim), f"http://127.0.0.1:{port}/v1", max_concurrency=256,
                            timeout_s=10, max_retries=1)
        kw = {k: v for k, v in (("exploration_share", args.explore), ("max_gain", args.max_gain)) if v is not None}
        policy = AdaptivePolicy(eps, confidence_target=args.target, first_stage=args.first_stage, cost=args.cost,
                                **kw)
        attributes = sorted({a for _, attrs in products for a in attrs})
        out = {"name": name, "products": len(products), "llms": len(eps), "policy": repr(policy)}
        async with Gateway(eps, schema) as gw:
            t0, usd0 = time.perf_counter(), spent(gw)
            dec_f, calls_f = await run_full(gw, products, Learner(args.flush, schema, attributes), args.chunk)
            t1, usd1 = time.perf_counter(), spent(gw)
            dec_a, calls_a, reasons, asked_by = await run_adaptive(
                gw, products, Learner(args.flush, schema, attributes), policy, args.chunk, args.rule)
            t2, usd2 = time.perf_counter(), spent(gw)
        out.update(full_calls=calls_f, adaptive_calls=calls_a, full_s=t1 - t0, adaptive_s=t2 - t1,
                   full_acc=accuracy(dec_f, gold), adaptive_acc=accuracy(dec_a, gold), reasons=reasons,
                   full_cost=usd1 - usd0, adaptive_cost=usd2 - usd1, full_decisions=len(dec_f),
                   adaptive_decisions=len(dec_a), where=where(dec_f, dec_a, gold, asked_by))
        return out
    finally:
        await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--shared", dest="data", type=Path, default=SHARED,
                    help="a directory laid out like ../shared/data (llm_predictions/, products/); default %(default)s")
    ap.add_argument("--real", type=Path, default=REAL_VOTES,
                    help="recorded real-LLM votes (llm-votes JSONL); skipped when absent. Default %(default)s")
    ap.add_argument("--real-products", type=Path, default=DEMO_PRODUCTS,
                    help="products (with gold) of the real recording; default the shipped OA-Mine demo catalogue")
    ap.add_argument("--limit", type=int, default=None, help="products per dataset (default: all)")
    ap.add_argument("--chunk", type=int, default=32, help="products in flight; the model learns between chunks")
    ap.add_argument("--flush", type=int, default=1, help="items per attribute learnt in one partial_fit (at most one chunk's)")
    ap.add_argument("--rule", choices=("gain", "confidence"), default="gain",
                    help="stopping rule: expected accuracy gain (default) or the previous max-posterior target")
    ap.add_argument("--target", type=float, default=0.95, help="confidence_target (--rule confidence)")
    ap.add_argument("--max-gain", type=float, default=None, help="max_gain (--rule gain; default: the policy's)")
    ap.add_argument("--cost", choices=("calls", "price"), default="calls", help="what plan() ranks value against")
    ap.add_argument("--explore", type=float, default=None, help="exploration_share (default: the policy's)")
    ap.add_argument("--first-stage", type=int, default=2)
    args = ap.parse_args()
    pred_dir = args.data / "llm_predictions"
    prod = args.data / "products" / "products.jsonl"
    if not (pred_dir / "predictions.jsonl").exists() or not prod.exists():
        sys.exit(f"data not found under {args.data.resolve()} (expected llm_predictions/ and products/)")
    schema = AttributeSchema.load()
    no_wait = {"latency_ms": {"mean": 2.0, "p99": 5.0},
               "faults": {"http_429": 0, "http_500": 0, "malformed": 0, "out_of_schema": 0}}
    tmp = tempfile.TemporaryDirectory(prefix="llmens-bench-adaptive-")
    sets = []

    # (a) replay of the recorded GPT runs
    names = sorted({orjson.loads(x)["model"] for x in (pred_dir / "predictions.jsonl").read_bytes().splitlines()
                    if x.strip()})
    replay = replay_config(pred_dir / "predictions.jsonl", pred_dir / "products.jsonl", names, replay_price, no_wait)
    sets.append(("replay llm_predictions", replay,
                 *load(pred_dir / "products.jsonl", pred_dir / "predictions.jsonl", schema, args.limit)))
    # (b) 5 simulated models on the products catalogue
    sim = load_sim_config(None).model_dump(mode="json")
    sim["products"] = str(prod)
    sim["defaults"] = {**sim.get("defaults", {}), **no_wait}
    for m in sim["models"]:
        m["latency_ms"], m["faults"] = no_wait["latency_ms"], None
    sets.append(("sim-5 products", sim, *load(prod, None, schema, args.limit)))
    # (c) the real local LLMs' recorded votes, when present
    if args.real.exists() and args.real_products.exists():
        preds = Path(tmp.name) / "real_predictions.jsonl"
        llms = votes_to_predictions(args.real, preds)
        sets.append((f"real-llm {args.real.stem}", replay_config(preds, args.real_products, llms, real_price, no_wait),
                     *load(args.real_products, preds, schema, args.limit)))
    else:
        print(f"[real] skipped: no recording at {args.real} (or products {args.real_products}); "
              "pass --real FILE (llm-votes JSONL of the real local LLMs)")

    async def run_all():
        return [await dataset(name, cfg, p, g, schema, args) for name, cfg, p, g in sets]

    try:
        res = asyncio.run(run_all())
    finally:
        tmp.cleanup()
    tot = defaultdict(float)
    for r in res:
        n = r["products"]
        fa, fn = r["full_acc"]
        aa, an = r["adaptive_acc"]
        print(f"[{r['name']}] {n} products, {r['llms']} LLMs, {r['policy']}")
        print(f"  full     : {r['full_calls'] / n:.2f} calls/product  accuracy {fa / fn:.4f} ({fa}/{fn})  "
              f"${1000 * r['full_cost'] / max(r['full_decisions'], 1):.4f}/1k decisions  {r['full_s']:.1f}s")
        print(f"  adaptive : {r['adaptive_calls'] / n:.2f} calls/product  accuracy {aa / an:.4f} ({aa}/{an})  "
              f"${1000 * r['adaptive_cost'] / max(r['adaptive_decisions'], 1):.4f}/1k decisions  "
              f"{r['adaptive_s']:.1f}s  stop reasons {r['reasons']}")
        w = r["where"]
        lost = {k: v for k, v in sorted(w["lost"].items()) if v}
        print(f"  decisions lost(+)/won(-) vs full: {lost or 'none'}")
        print(f"  adaptive calls by reason/phase: {dict(sorted(w['calls'].items()))}")
        top = sorted(w["first"].items(), key=lambda kv: -kv[1])[:3]
        print(f"  first asked (staged products): {dict(top)}")
        print(f"  [{r['name']}] calls_ratio={r['adaptive_calls'] / r['full_calls']:.3f} "
              f"price_ratio={r['adaptive_cost'] / r['full_cost']:.3f} accuracy_delta={100 * (aa / an - fa / fn):+.2f}")
        for k, v in (("fc", r["full_calls"]), ("ac", r["adaptive_calls"]), ("fo", fa), ("fn", fn),
                     ("ao", aa), ("an", an), ("fcost", r["full_cost"]), ("acost", r["adaptive_cost"])):
            tot[k] += v
    print(f"calls_ratio={tot['ac'] / tot['fc']:.3f} price_ratio={tot['acost'] / tot['fcost']:.3f} "
          f"accuracy_delta={100 * (tot['ao'] / tot['an'] - tot['fo'] / tot['fn']):+.2f}")


if __name__ == "__main__":
    main()
