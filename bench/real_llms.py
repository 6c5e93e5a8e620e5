"""Real local LLMs as ensemble members: accuracy per model / majority / default aggregator, speed, gateway cost.

    python bench/real_llms.py --products FILE --limit N [--config deploy/llmens.real.yaml]
                              [--votes OUT.jsonl] [--direct M] [--json]

Needs the servers of ``make real-llms`` (deploy/real-llms); exits with a message when one is not answering.
Asks every member of ``--config`` about every product (its annotated attributes that the shipped schema knows)
through the gateway, writes the votes in the ``llm-votes`` record format (one JSON list of a product's
LabelVotes per line; ``llmens fit`` reads it), and scores against gold (``attributes``; ``null`` = "none";
an abstention or failed call counts as wrong):

* per member, ``majority`` (plain vote, ties to the first member in name order) and ``ensemble`` (the
  default aggregator, unsupervised batch Dawid-Skene on these votes with the config's families): accuracy per
  attribute and pooled over every scored attribute value; ``best single`` is the member with the best pooled
  accuracy, and the ensemble is compared with it;
* per member: prompts/s (successful requests / wall time of the run, members in parallel) and p50/p95 latency;
* ``gateway_vs_direct``: the same servers asked about the same ``--direct`` products (after the main run, so
  both are warm) first by a minimal aiohttp client sending the gateway's own request bodies, ``--in-flight``
  at a time per server, then by the gateway; ratio = gateway prompts/s / direct prompts/s.

``--limit N`` takes N products spread evenly over the file (every len/N-th), so a mixed file is covered across
its sources. Products are asked grouped by attribute set: llama.cpp servers reuse the KV cache of the longest
common prompt prefix, and the prompt only starts to differ at the attribute names.

Last line: ``ensemble_vs_best_single=<ratio of pooled accuracies>``, or with ``--json`` one JSON object
``{"members", "pooled", "per_attribute", "prompts_per_s", "gateway_vs_direct", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmens_core.aggregation import default_aggregator  # noqa: E402
from llmens_core.events import NOT_PRESENT, LabelVote, ProductUpdate  # noqa: E402
from llmens_core.llm.config import EndpointConfig, load_endpoints  # noqa: E402
from llmens_core.llm.gateway import Gateway  # noqa: E402
from llmens_core.llm.prompts import build_prompt  # noqa: E402
from llmens_core.llm.providers import PROVIDERS  # noqa: E402
from llmens_core.schema import AttributeSchema  # noqa: E402
from llmens_core.scoring import majority  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def spread(records: list[dict], limit: int | None) -> list[dict]:
    """``limit`` records evenly spaced over ``records`` (all of them when ``limit`` is None or larger)."""
    if limit is None or limit >= len(records):
        return records
    idx = np.linspace(0, len(records), num=limit, endpoint=False).astype(int)
    return [records[i] for i in idx]


def load_products(path: Path, limit: int | None, schema: AttributeSchema) -> list[dict]:
    """Products with their annotated attributes the schema knows, grouped by attribute set (stable)."""
    recs = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    out = []
    for r in spread(recs, limit):
        attrs = sorted(a for a in (r.get("attributes") or {}) if a in schema)
        if attrs:
            out.append({**r, "asked": attrs})
    return sorted(out, key=lambda r: r["asked"])


def product_event(r: dict) -> ProductUpdate:
    return ProductUpdate(product_id=r["product_id"], version=1, title=r["title"], description=r.get("description"),
                         category=r.get("category"), attributes=r["asked"])


async def check_servers(endpoints: list[EndpointConfig]) -> None:
    async with aiohttp.ClientSession() as s:
        for ep in endpoints:
            try:
                async with s.get(ep.base_url.rstrip("/") + "/models", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        continue
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            sys.exit(f"{ep.name} is not answering at {ep.base_url} (start the servers: make real-llms)")


async def run_gateway(endpoints: list[EndpointConfig], schema: AttributeSchema, products: list[dict],
                      in_flight: int) -> tuple[list[list[LabelVote]], float]:
    """Every product through the gateway, ``in_flight`` products at a time: (votes per product, wall seconds)."""
    out: list[list[LabelVote]] = [[] for _ in products]
    queue = list(enumerate(products))
    async with Gateway(endpoints, schema, product_deadline_s=600.0) as gw:
        async def worker() -> None:
            while queue:
                i, r = queue.pop(0)
                out[i] = await gw.label(product_event(r), r["asked"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return out, time.perf_counter() - t0


async def run_direct(endpoints: list[EndpointConfig], schema: AttributeSchema, products: list[dict],
                     in_flight: int) -> tuple[int, float]:
    """The gateway's request bodies sent straight to each server, ``in_flight`` at a time per server."""
    async with aiohttp.ClientSession() as s:
        async def member(ep: EndpointConfig) -> int:
            prov = PROVIDERS[ep.provider]
            url, headers = prov.url(ep), prov.headers(ep, ep.api_key())
            bodies = [prov.body_bytes(ep, build_prompt(product_event(r), [schema[a] for a in r["asked"]],
                                                       ep.prompt)) for r in products]
            ok = 0

            async def one() -> None:
                nonlocal ok
                while bodies:
                    body = bodies.pop(0)
                    async with s.post(url, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=ep.timeout_s)) as resp:
                        await resp.read()
                        ok += resp.status == 200

            await asyncio.gather(*(one() for _ in range(in_flight)))
            return ok

        t0 = time.perf_counter()
        done = await asyncio.gather(*(member(ep) for ep in endpoints))
        return sum(done), time.perf_counter() - t0


def score(products: list[dict], votes: list[list[LabelVote]], members: list[str], families: dict[str, str]
          ) -> tuple[dict, dict]:
    """(per_attribute {attr: {n, member..., majority, ensemble}}, pooled {member..., majority, ensemble})."""
    gold = {(r["product_id"], a): (NOT_PRESENT if r["attributes"][a] is None else r["attributes"][a])
            for r in products for a in r["asked"]}
    by_attr: dict[str, dict[str, dict[str, str | None]]] = defaultdict(lambda: defaultdict(dict))
    for pv in votes:
        for v in pv:
            by_attr[v.attribute][v.product_id][v.llm] = v.label
    per_attribute, right, total = {}, defaultdict(int), 0
    for attr in sorted(by_attr):
        items = by_attr[attr]
        it, wk, lb = zip(*[(pid, m, lab) for pid, row in items.items() for m, lab in row.items()], strict=True)
        agg = default_aggregator(families=families)
        decided = dict(zip(agg.fit(list(it), list(wk), list(lb)).items_, agg.predict(), strict=True)) \
            if any(x is not None for x in lb) else {}
        row = defaultdict(int)
        for pid, mv in items.items():
            g = gold.get((pid, attr))
            if g is None:
                continue
            row["n"] += 1
            for m in members:
                row[m] += mv.get(m) == g
            row["majority"] += majority(mv) == g
            row["ensemble"] += decided.get(pid) == g
        n = row["n"]
        total += n
        for k in [*members, "majority", "ensemble"]:
            right[k] += row[k]
        per_attribute[attr] = {"n": n, **{k: round(row[k] / n, 4) for k in [*members, "majority", "ensemble"]}}
    pooled = {k: round(right[k] / max(1, total), 4) for k in [*members, "majority", "ensemble"]}
    return per_attribute, {**pooled, "n": total}


def speed(votes: list[list[LabelVote]], members: list[str], wall: float) -> dict:
    """Per member: successful prompts/s over the run's wall time, p50/p95 latency (s), failed calls."""
    out = {}
    for m in members:
        lat, failed = {}, 0
        for pv in votes:
            mine = [v for v in pv if v.llm == m]
            if mine and mine[0].error is None:
                lat[mine[0].product_id] = mine[0].latency_s
            elif mine:
                failed += 1
        arr = np.array(list(lat.values())) if lat else np.zeros(1)
        out[m] = {"prompts_per_s": round(len(lat) / wall, 3), "p50_s": round(float(np.percentile(arr, 50)), 3),
                  "p95_s": round(float(np.percentile(arr, 95)), 3), "failed": failed}
    return out


def confidence_summary(votes: list[list[LabelVote]], products: list[dict]) -> dict:
    """Mean logprob confidence of right and of wrong votes, per member that returned confidences."""
    gold = {(r["product_id"], a): (NOT_PRESENT if r["attributes"][a] is None else r["attributes"][a])
            for r in products for a in r["asked"]}
    acc: dict[str, dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for pv in votes:
        for v in pv:
            g = gold.get((v.product_id, v.attribute))
            if v.confidence is not None and g is not None:
                acc[v.llm][v.label == g].append(v.confidence)
    return {m: {"right": round(float(np.mean(d[True])), 3) if d[True] else None,
                "wrong": round(float(np.mean(d[False])), 3) if d[False] else None} for m, d in sorted(acc.items())}


def print_table(per_attribute: dict, pooled: dict, members: list[str], perf: dict, best: str) -> None:
    cols = [*members, "majority", "ensemble"]
    print(f"{'attribute':22s} {'n':>4s} " + " ".join(f"{c:>10s}" for c in cols))
    for attr, row in per_attribute.items():
        print(f"{attr:22s} {row['n']:4d} " + " ".join(f"{row[c]:10.3f}" for c in cols))
    print(f"{'pooled':22s} {pooled['n']:4d} " + " ".join(f"{pooled[c]:10.3f}" for c in cols))
    for m in members:
        p = perf[m]
        print(f"{m:12s} prompts/s {p['prompts_per_s']:7.3f}  p50 {p['p50_s']:7.3f}s  p95 {p['p95_s']:7.3f}s  "
              f"failed {p['failed']}")
    print(f"best single: {best} ({pooled[best]:.3f}); ensemble {pooled['ensemble']:.3f}; "
          f"majority {pooled['majority']:.3f}")


async def main_async(args: argparse.Namespace) -> None:
    schema = AttributeSchema.load()
    endpoints = [e for e in load_endpoints(args.config) if e.enabled]
    members = [e.name for e in endpoints]
    families = {e.name: e.family or e.name for e in endpoints}
    products = load_products(args.products, args.limit, schema)
    if not products:
        sys.exit(f"no products with annotated attributes in {args.products}")
    await check_servers(endpoints)
    in_flight = args.in_flight
    print(f"{len(products)} products x {len(members)} members ({', '.join(members)}), {in_flight} in flight",
          file=sys.stderr)
    votes, wall = await run_gateway(endpoints, schema, products, in_flight)
    if args.votes:
        args.votes.parent.mkdir(parents=True, exist_ok=True)
        with open(args.votes, "wb") as f:
            for pv in sorted(votes, key=lambda pv: pv[0].product_id if pv else ""):
                f.write(orjson.dumps([v.model_dump(mode="json") for v in pv]) + b"\n")
    per_attribute, pooled = score(products, votes, members, families)
    perf = speed(votes, members, wall)
    best = max(members, key=lambda m: pooled[m])
    sub = products[: max(1, min(args.direct, len(products)))]
    d_ok, d_wall = await run_direct(endpoints, schema, sub, in_flight)
    g_votes, g_wall = await run_gateway(endpoints, schema, sub, in_flight)
    g_ok = sum(1 for pv in g_votes for m in members
               if any(v.llm == m for v in pv) and all(v.error is None for v in pv if v.llm == m))
    g_rate, d_rate = g_ok / g_wall, d_ok / d_wall
    result = {
        "members": members, "products": len(products), "pooled": pooled, "per_attribute": per_attribute,
        "best_single": best, "ensemble_vs_best_single": round(pooled["ensemble"] / max(1e-9, pooled[best]), 4),
        "prompts_per_s": round(sum(perf[m]["prompts_per_s"] for m in members), 3), "per_member": perf,
        "confidence": confidence_summary(votes, products), "wall_s": round(wall, 1),
        "direct": {"products": len(sub), "gateway_prompts_per_s": round(g_rate, 3),
                   "direct_prompts_per_s": round(d_rate, 3)},
        "gateway_vs_direct": round(g_rate / max(1e-9, d_rate), 4),
    }
    print_table(per_attribute, pooled, members, perf, best)
    print(f"confidence (mean, right / wrong votes): {result['confidence']}")
    print(f"gateway {g_rate:.3f} prompts/s vs direct {d_rate:.3f} prompts/s on {len(sub)} products: "
          f"gateway_vs_direct={result['gateway_vs_direct']}")
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"ensemble_vs_best_single={result['ensemble_vs_best_single']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=Path, required=True, help="products JSONL (gold in `attributes`)")
    ap.add_argument("--limit", type=int, default=None, help="N products spread evenly over the file")
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "llmens.real.yaml")
    ap.add_argument("--votes", type=Path, default=None, help="write the votes here (llm-votes records)")
    ap.add_argument("--direct", type=int, default=12, help="products for the gateway-vs-direct comparison")
    ap.add_argument("--in-flight", type=int, default=1,
                    help="products asked at once (a llama-cpp-python server answers one request at a time, so "
                         "more only queues inside it and inflates the measured latency)")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
