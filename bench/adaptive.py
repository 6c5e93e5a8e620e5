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

``--student`` (issue 33) adds runs per dataset: student + adaptive (``ask_student_first``: each attribute's
student, cold at the start, votes first and the LLMs are asked only for what its vote leaves unsettled; between
chunks the DS models learn what an LLM answered and the students learn the panel's decisions; a model that has
learnt nothing starts from the prior shared across attributes, ``shared_priors``/``shared_criterion`` and
``OnlineDawidSkene.set_worker_priors``), the same without the shared prior (the long tail's comparison), and, on
the datasets of real answers (not the simulated panel), full fan-out with the student as a member (quality:
printed beside majority vote and the best single LLM). Per dataset: the share decided by the student alone, its
prequential accuracy per attribute (against gold, never used to choose anything; its agreement with the panel is
what licenses it), attributes with < 100 products against the others with and without the shared prior, a note
when the student decided (almost) nothing alone, and ``[name] calls_ratio=... price_ratio=... accuracy_delta=...``
of student + adaptive; the adaptive line is then labelled ``adaptive``, the pooled adaptive line is printed
before, and the last line is student + adaptive's, pooled. A dataset missing under ``--data`` is skipped with a
message.

The models learn as the stream's learner does between races: ``partial_fit(race=False)``; ``--race`` runs a
young model's race inline when due (13-40 s of CPU each on a loaded 2-core machine; the stream runs it aside).
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

from llmens_core.adaptive import (  # noqa: E402
    AdaptivePolicy,
    ask_in_stages,
    ask_student_first,
    decided_alone,
    learnable,
    shared_criterion,
    shared_priors,
    teaching,
)
from llmens_core.aggregation import OnlineDawidSkene, default_online  # noqa: E402
from llmens_core.decisions import StatsAccumulator, decide, votes_by_attribute  # noqa: E402
from llmens_core.events import ProductUpdate  # noqa: E402
from llmens_core.llm import Gateway  # noqa: E402
from llmens_core.llm.simulator import endpoints_for, load_sim_config, start_simulator  # noqa: E402
from llmens_core.schema import AttributeSchema  # noqa: E402
from llmens_core.scoring import gold_labels, recorded_attributes  # noqa: E402
from llmens_core.student import STUDENT, AttributeStudent, Students, product_text  # noqa: E402

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
    """The stream's learner step: each flush is one ``partial_fit(race=False)`` per attribute. With ``race`` a
    young model's race (:meth:`OnlineDawidSkene.young_race`) runs inline when due and is adopted at once (the
    stream's learner runs it aside in a niced process and adopts it when done); off by default, as a race costs
    13-40 s of CPU on this 2-core machine under load, against 0.2 s for a plain step."""

    def __init__(self, flush: int, schema: AttributeSchema, attributes=(), race: bool = False,
                 prior: bool = False):
        self.race, self.prior = race, prior
        self.models: dict[str, OnlineDawidSkene] = _Models(schema)
        for a in attributes:  # cold models up front, as the stream's registry hands out on first use
            self.models[a]
        self.acc = StatsAccumulator(flush_items=flush)
        self.warmed: set[str] = set()

    def warm(self, attributes) -> None:
        """With ``prior``: a model that has learnt nothing starts from the prior shared across attributes
        (:func:`shared_priors` of the other models) as soon as one can be fitted, before it decides."""
        if not self.prior:
            return
        for a in dict.fromkeys(attributes):
            m = self.models[a]
            if a in self.warmed or m.n_items_ > 0:
                continue
            p = shared_priors(self.models, exclude=[a])
            if p:
                m.set_worker_priors(p, shared_criterion(self.models, exclude=[a]))
                self.warmed.add(a)

    def add(self, pid: str, votes: dict[str, dict]) -> None:
        for a, v in votes.items():
            self.acc.add(a, pid, v)

    def flush(self) -> None:
        for a in self.acc.attributes():
            votes = self.acc.take_votes(a)
            if votes is not None:
                m = self.models[a]
                m.partial_fit(*votes, race=False)
                job = m.young_race() if self.race else None
                if job is not None:
                    m.adopt_race(job())


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


def make_students(schema: AttributeSchema, policy: AdaptivePolicy, share: float) -> Students:
    """Cold students per attribute; they vote where their agreement with the panel is at least 1 - max_gain (the
    policy's own budget per decision), never by gold."""
    return Students(lambda a: AttributeStudent(schema[a].classes, target=1.0 - policy.max_gain),
                    exploration_share=share)


async def run_student(gw: Gateway, products, learner: Learner, policy: AdaptivePolicy, students: Students,
                      chunk: int):
    """The student asked first (``ask_student_first``); between chunks the DS models learn the decisions an LLM
    answered and each student learns the panel's decisions without its own vote (prequential: it guessed the
    chunk before learning it)."""
    decisions, calls, reasons, guessed = [], 0, defaultdict(int), {}

    async def one(p, attrs, text, g):
        _, by, asked, why = await ask_student_first(
            policy, lambda todo, llms: gw.label(p, todo, llms=llms), p.product_id, attrs, learner.models,
            Students.votes(g), may_decide_alone=not students.explore(p.product_id))
        return p, attrs, text, g, by, asked, why

    for s in range(0, len(products), chunk):
        batch = [(p, a, product_text(p.title, p.description, p.category)) for p, a in products[s : s + chunk]]
        learner.warm(a for _, attrs, _ in batch for a in attrs)
        g_all = chunk_guesses(students, batch)
        teach: dict[str, list] = defaultdict(list)
        for p, attrs, text, g, by, asked, why in await asyncio.gather(*(one(*b, g) for b, g in zip(batch, g_all))):
            calls += len(asked)
            reasons[why] += 1
            for a in attrs:
                m = learner.models[a]
                d, _ = decide(p.product_id, 1, a, by.get(a, {}), m, reason="complete" if why == "explore"
                              else "adaptive", asked=[w for w in by.get(a, {}) if w != STUDENT])
                decisions.append({**d.model_dump(), "alone": decided_alone(by.get(a, {}))})
                guessed[(p.product_id, a)] = g[a]
                t = teaching(m, by.get(a, {}))
                if t is not None:
                    teach[a].append((text, *t))
            learner.add(p.product_id, learnable(by))
        await asyncio.to_thread(learner.flush)
        for a, rows in teach.items():
            texts, labels, weights = zip(*rows)
            students[a].learn(texts, labels, weights)
    return decisions, calls, dict(reasons), guessed


def chunk_guesses(students: Students, batch) -> list[dict]:
    """Each product's students' guesses for one chunk: one ``guess_many`` per attribute (one sparse transform and
    one ``predict_proba`` each, instead of one per product and attribute)."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, (_, attrs, _) in enumerate(batch):
        for a in attrs:
            rows[a].append(i)
    out: list[dict] = [{} for _ in batch]
    for a, idx in rows.items():
        for i, g in zip(idx, students[a].guess_many([batch[i][2] for i in idx]), strict=True):
            out[i][a] = g
    return out


def majority_and_best(decisions, gold) -> tuple[float, str, float]:
    """Majority vote's accuracy (a tie counts the share of the tied labels that is gold: a random tie-break in
    expectation) and the best single LLM's (an abstention or no vote is wrong), over the LLMs' votes."""
    mv = n = 0.0
    right: dict[str, int] = defaultdict(int)
    for d in decisions:
        g = gold.get((d["product_id"], d["attribute"]))
        if g is None:
            continue
        n += 1
        counts: dict = defaultdict(int)
        for w, lab in d["votes"].items():
            if lab is not None and w != STUDENT:
                counts[lab] += 1
                right[w] += lab == g
        if counts:
            top = max(counts.values())
            tied = [lab for lab, c in counts.items() if c == top]
            mv += (g in tied) / len(tied)
    best = max(right, key=lambda w: right[w]) if right else "-"
    return mv / max(n, 1), best, right.get(best, 0) / max(n, 1)


def student_table(dec_s, dec_f, gold, guessed, students: Students, counts: dict) -> dict:
    """Per attribute: products, the student's prequential accuracy against gold (its top label, guessed before it
    learnt the product) and its windowed agreement with the panel, the share it decided alone and their accuracy,
    and the LLM asks (votes asked for) against full fan-out's."""
    rows: dict = defaultdict(lambda: defaultdict(float))
    full = {(f["product_id"], f["attribute"]): f for f in dec_f}
    for d in dec_s:
        a, key = d["attribute"], (d["product_id"], d["attribute"])
        f = full[key]
        r, g = rows[a], gold.get(key)
        r["decisions"] += 1
        r["asks"] += len([w for w in d["votes"] if w != STUDENT])
        r["full_asks"] += len(f["votes"])
        r["alone"] += d["alone"]
        if g is not None:
            r["scored"] += 1
            r["student_ok"] += guessed[key].label == g
            r["ok"] += d["value"] == g
            r["full_ok"] += f["value"] == g
            r["alone_scored"] += d["alone"]
            r["alone_ok"] += d["alone"] and d["value"] == g
    for a, r in rows.items():
        r["products"] = counts.get(a, 0)
        agreement, n = students[a].record.agreement() if a in students else (float("nan"), 0)
        r["agreement"], r["window"] = agreement, n
    return rows


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


def progress(name: str, mode: str, seconds: float) -> None:
    """One line on stderr per mode run (the results print at the end)."""
    print(f"  {name} {mode}: done in {seconds:.1f}s", file=sys.stderr, flush=True)


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
            dec_f, calls_f = await run_full(gw, products, Learner(args.flush, schema, attributes, args.race), args.chunk)
            t1, usd1 = time.perf_counter(), spent(gw)
            progress(name, "full", t1 - t0)
            dec_a, calls_a, reasons, asked_by = await run_adaptive(
                gw, products, Learner(args.flush, schema, attributes, args.race), policy, args.chunk, args.rule)
            t2, usd2 = time.perf_counter(), spent(gw)
            progress(name, "adaptive", t2 - t1)
            if args.student:
                out.update(await student_modes(gw, eps, products, gold, schema, args, dec_f, policy,
                                               not name.startswith("sim")))
        out.update(full_calls=calls_f, adaptive_calls=calls_a, full_s=t1 - t0, adaptive_s=t2 - t1,
                   full_acc=accuracy(dec_f, gold), adaptive_acc=accuracy(dec_a, gold), reasons=reasons,
                   full_cost=usd1 - usd0, adaptive_cost=usd2 - usd1, full_decisions=len(dec_f),
                   adaptive_decisions=len(dec_a), where=where(dec_f, dec_a, gold, asked_by))
        return out
    finally:
        await runner.cleanup()


async def student_modes(gw: Gateway, eps, products, gold, schema, args, dec_f, policy, quality: bool) -> dict:
    """Student + adaptive with the prior shared across attributes (the design) and without it (the long tail's
    comparison), and with ``quality`` full fan-out with the student as a member (every LLM asked, the student
    votes)."""
    attributes = sorted({a for _, attrs in products for a in attrs})
    counts: dict[str, int] = defaultdict(int)
    for _, attrs in products:
        for a in attrs:
            counts[a] += 1
    out: dict = {"mv_best": majority_and_best(dec_f, gold)}
    for key, prior in (("student", True), ("noprior", False)):
        t0, usd0 = time.perf_counter(), spent(gw)
        students = make_students(schema, policy, args.student_explore)
        dec_s, calls_s, reasons_s, guessed = await run_student(
            gw, products, Learner(args.flush, schema, attributes, args.race, prior), policy, students, args.chunk)
        t1 = time.perf_counter()
        progress("", f"student + adaptive{'' if prior else ' without the shared prior'}", t1 - t0)
        out[key] = {"calls": calls_s, "cost": spent(gw) - usd0, "s": t1 - t0, "acc": accuracy(dec_s, gold),
                    "reasons": reasons_s, "decisions": len(dec_s),
                    "table": student_table(dec_s, dec_f, gold, guessed, students, counts)}
    if quality:
        t0 = time.perf_counter()
        everyone = AdaptivePolicy(eps, exploration_share=1.0)
        dec_fs, _, _, _ = await run_student(gw, products, Learner(args.flush, schema, attributes, args.race),
                                            everyone, make_students(schema, policy, 0.0), args.chunk)
        progress("", "full + student member", time.perf_counter() - t0)
        out["full_student_acc"] = accuracy(dec_fs, gold)
    return out


def datasets(args, schema: AttributeSchema, tmp: Path) -> list:
    """(name, simulator config, products, gold) of every dataset found under ``--data`` (and ``--real``); a
    missing one is skipped with a message."""
    no_wait = {"latency_ms": {"mean": 2.0, "p99": 5.0},
               "faults": {"http_429": 0, "http_500": 0, "malformed": 0, "out_of_schema": 0}}
    pred_dir = args.data / "llm_predictions"
    prod = args.data / "products" / "products.jsonl"
    sets = []
    if (pred_dir / "predictions.jsonl").exists() and (pred_dir / "products.jsonl").exists():
        names = sorted({orjson.loads(x)["model"] for x in (pred_dir / "predictions.jsonl").read_bytes().splitlines()
                        if x.strip()})
        replay = replay_config(pred_dir / "predictions.jsonl", pred_dir / "products.jsonl", names, replay_price,
                               no_wait)
        sets.append(("replay llm_predictions", replay,
                     *load(pred_dir / "products.jsonl", pred_dir / "predictions.jsonl", schema, args.limit)))
    else:
        print(f"[replay] skipped: no {pred_dir}/predictions.jsonl and products.jsonl")
    if prod.exists():
        sim = load_sim_config(None).model_dump(mode="json")
        sim["products"] = str(prod)
        sim["defaults"] = {**sim.get("defaults", {}), **no_wait}
        for m in sim["models"]:
            m["latency_ms"], m["faults"] = no_wait["latency_ms"], None
        sets.append(("sim-5 products", sim, *load(prod, None, schema, args.limit)))
    else:
        print(f"[sim-5] skipped: no {prod}")
    if args.real.exists() and args.real_products.exists():
        preds = tmp / "real_predictions.jsonl"
        llms = votes_to_predictions(args.real, preds)
        sets.append((f"real-llm {args.real.stem}", replay_config(preds, args.real_products, llms, real_price, no_wait),
                     *load(args.real_products, preds, schema, args.limit)))
    else:
        print(f"[real] skipped: no recording at {args.real} (or products {args.real_products}); "
              "pass --real FILE (llm-votes JSONL of the real local LLMs)")
    return sets


def print_adaptive(r: dict, tot: dict) -> None:
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
    label = "adaptive " if "student" in r else ""
    print(f"  [{r['name']}] {label}calls_ratio={r['adaptive_calls'] / r['full_calls']:.3f} "
          f"price_ratio={r['adaptive_cost'] / r['full_cost']:.3f} accuracy_delta={100 * (aa / an - fa / fn):+.2f}")
    for k, v in (("fc", r["full_calls"]), ("ac", r["adaptive_calls"]), ("fo", fa), ("fn", fn),
                 ("ao", aa), ("an", an), ("fcost", r["full_cost"]), ("acost", r["adaptive_cost"])):
        tot[k] += v


def print_groups(rows: dict, label: str) -> None:
    """Long tail (< 100 products) against the others: LLM asks ratio and accuracy, student mode vs full."""
    for name, keep in (("long tail (<100 products)", lambda r: r["products"] < 100),
                       ("others (>=100 products)", lambda r: r["products"] >= 100)):
        g = [r for r in rows.values() if keep(r)]
        if not g:
            print(f"  {label} {name}: no attribute")
            continue
        t = {k: sum(r[k] for r in g) for k in ("asks", "full_asks", "ok", "full_ok", "scored", "alone",
                                              "decisions")}
        print(f"  {label} {name}: {len(g)} attributes, {t['decisions']:.0f} decisions, asks_ratio "
              f"{t['asks'] / max(t['full_asks'], 1):.3f}, accuracy {t['ok'] / max(t['scored'], 1):.4f} vs full "
              f"{t['full_ok'] / max(t['scored'], 1):.4f}, decided by student alone {t['alone'] / t['decisions']:.3f}")


def print_student(r: dict, tot: dict) -> None:
    n = r["products"]
    fa, fn = r["full_acc"]
    st, npr = r["student"], r["noprior"]
    sa, sn = st["acc"]
    mv, best, best_acc = r["mv_best"]
    rows = st["table"]
    alone = sum(x["alone"] for x in rows.values()) / max(sum(x["decisions"] for x in rows.values()), 1)
    print(f"  student  : {st['calls'] / n:.2f} calls/product  accuracy {sa / sn:.4f} ({sa}/{sn})  "
          f"${1000 * st['cost'] / max(st['decisions'], 1):.4f}/1k decisions  {st['s']:.1f}s  "
          f"stop reasons {st['reasons']}  decided by the student alone {alone:.3f} of decisions")
    na, nn = npr["acc"]
    print(f"  student without the shared prior: {npr['calls'] / n:.2f} calls/product  accuracy {na / nn:.4f}  "
          f"calls_ratio={npr['calls'] / r['full_calls']:.3f} price_ratio={npr['cost'] / r['full_cost']:.3f}")
    if "full_student_acc" in r:
        fsa, fsn = r["full_student_acc"]
        print(f"  quality  : full {fa / fn:.4f}  full + student member {fsa / fsn:.4f}  majority vote {mv:.4f}  "
              f"best single LLM {best_acc:.4f} ({best})")
    else:
        print("  quality  : full + student member not run on the simulated panel (done-when 5 is about real answers)")
    print("  student per attribute: products, prequential accuracy vs gold, agreement with the panel (window), "
          "decided alone (their accuracy), accuracy student mode / full")
    for a, x in sorted(rows.items(), key=lambda kv: -kv[1]["products"]):
        sc = max(x["scored"], 1)
        print(f"    {a:20s} {x['products']:5.0f}  student {x['student_ok'] / sc:.3f}  agree {x['agreement']:.3f} "
              f"({x['window']:.0f})  alone {x['alone'] / x['decisions']:.3f} "
              f"({x['alone_ok'] / max(x['alone_scored'], 1):.3f})  {x['ok'] / sc:.3f} / {x['full_ok'] / sc:.3f}")
    print_groups(rows, "with the shared prior   ")
    print_groups(npr["table"], "without the shared prior")
    if alone < 0.05:
        print(f"  note: the student decided {alone:.1%} of decisions alone: with {n} products its agreement with the "
              "panel never reached the licence, so it saved nothing here")
    print(f"  [{r['name']}] calls_ratio={st['calls'] / r['full_calls']:.3f} "
          f"price_ratio={st['cost'] / r['full_cost']:.3f} accuracy_delta={100 * (sa / sn - fa / fn):+.2f}")
    for k, v in (("sc", st["calls"]), ("so", sa), ("sn", sn), ("scost", st["cost"])):
        tot[k] += v


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
    ap.add_argument("--race", action="store_true",
                    help="run young models' races inline when due (13-40 s each here; the stream runs them aside)")
    ap.add_argument("--rule", choices=("gain", "confidence"), default="gain",
                    help="stopping rule: expected accuracy gain (default) or the previous max-posterior target")
    ap.add_argument("--target", type=float, default=0.95, help="confidence_target (--rule confidence)")
    ap.add_argument("--max-gain", type=float, default=None, help="max_gain (--rule gain; default: the policy's)")
    ap.add_argument("--cost", choices=("calls", "price"), default="calls", help="what plan() ranks value against")
    ap.add_argument("--explore", type=float, default=None, help="exploration_share (default: the policy's)")
    ap.add_argument("--first-stage", type=int, default=2)
    ap.add_argument("--student", action="store_true",
                    help="also run student + adaptive and full fan-out with the student as a member (issue 33); "
                         "the last line is then student + adaptive's")
    ap.add_argument("--student-explore", type=float, default=0.1,
                    help="share of products on which the student may not decide alone (default %(default)s)")
    args = ap.parse_args()
    schema = AttributeSchema.load()
    tmp = tempfile.TemporaryDirectory(prefix="llmens-bench-adaptive-")
    try:
        sets = datasets(args, schema, Path(tmp.name))
        if not sets:
            sys.exit(f"no dataset found under {args.data.resolve()} (expected llm_predictions/ or products/)")

        async def run_all():
            return [await dataset(name, cfg, p, g, schema, args) for name, cfg, p, g in sets]

        res = asyncio.run(run_all())
    finally:
        tmp.cleanup()
    tot: dict = defaultdict(float)
    for r in res:
        print_adaptive(r, tot)
        if args.student:
            print_student(r, tot)
    pooled = (f"calls_ratio={tot['ac'] / tot['fc']:.3f} price_ratio={tot['acost'] / tot['fcost']:.3f} "
              f"accuracy_delta={100 * (tot['ao'] / tot['an'] - tot['fo'] / tot['fn']):+.2f}")
    if not args.student:
        print(pooled)
        return
    print(f"pooled adaptive (no student): {pooled}")
    print(f"calls_ratio={tot['sc'] / tot['fc']:.3f} price_ratio={tot['scost'] / tot['fcost']:.3f} "
          f"accuracy_delta={100 * (tot['so'] / tot['sn'] - tot['fo'] / tot['fn']):+.2f}")


if __name__ == "__main__":
    main()
