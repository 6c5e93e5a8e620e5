"""Helpers for end-to-end tests: product events with gold kept aside, fast simulator configs."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import orjson

from llmens_core.llm.simulator import load_sim_config
from llmens_core.scoring import gold_labels

DEMO = Path(__file__).resolve().parents[2] / "llmens_core" / "data" / "demo_products.jsonl"


def demo_events(copies: int = 1, *, limit: int | None = None, distinct_text: bool = False):
    """(events, gold): demo products as ProductUpdate dicts asking their annotated attributes.

    Copies get new product ids; with ``distinct_text`` their text differs too (no response-cache hits).
    """
    base = [orjson.loads(line) for line in DEMO.read_bytes().splitlines()][:limit]
    events, gold_src = [], []
    for c in range(copies):
        for p in base:
            pid = p["product_id"] if c == 0 else f"{p['product_id']}~{c}"
            desc = f"copy {c}" if distinct_text and c else None
            events.append({"product_id": pid, "version": 1, "title": p["title"], "description": desc,
                           "category": p["category"], "attributes": sorted(p["attributes"])})
            gold_src.append({"product_id": pid, "attributes": p["attributes"]})
    return events, gold_labels(gold_src)


def fast_sim(latency_ms: float = 5.0, **model_overrides) -> dict:
    """The built-in 5 simulated models with short latency and no faults, as a dict."""
    cfg = load_sim_config(None).model_dump(mode="json")
    cfg["defaults"] = {**cfg.get("defaults", {}), "latency_ms": {"mean": latency_ms, "p99": latency_ms * 2},
                       "faults": {}}
    for m in cfg["models"]:
        m["latency_ms"] = {"mean": latency_ms, "p99": latency_ms * 2}
        m["faults"] = None
        m.update(model_overrides)
    return cfg


def expected_keys(events) -> set[tuple[str, int, str]]:
    return {(e["product_id"], e["version"], a) for e in events for a in e["attributes"]}


def decision_keys(decisions) -> collections.Counter:
    return collections.Counter((d["product_id"], d["version"], d["attribute"]) for d in decisions)


def wait_until_every_worker_has_partitions(stack, workers: int, timeout_s: float = 60.0) -> None:
    """Block until each worker owns a product-updates partition (a worker still joining the group when a short
    stream is published can otherwise find it all consumed by the others)."""
    topic = stack.topic("product_updates")
    deadline = time.monotonic() + timeout_s
    while True:
        owned = [sum(p.startswith(f"{topic}:") for p in stack.worker_json(i, "/counters")["partitions"]["assigned"])
                 for i in range(workers)]
        if all(owned):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions of {topic} per worker after {timeout_s}s: {owned}")
        time.sleep(0.2)


def settled_model(s, quiet_s: float = 2.0, *, races: bool = False) -> dict:
    """Worker 0's ``/model`` once its learner has learnt every record the worker sent (and, with ``races``, has no
    young model's race running, the settling race of a quiet attribute included) and nothing changed for ``quiet_s``
    (with ``races``, at least long enough for a settling race to start: ``SETTLE_AFTER_S``, a poll and a margin)."""
    from streams.learner import SETTLE_AFTER_S

    quiet_s = max(quiet_s, SETTLE_AFTER_S + 2.0) if races else quiet_s
    last, since = None, time.monotonic()
    deadline = since + 120  # a young model races as its data grows: seconds per step
    while time.monotonic() < deadline:
        c = s.worker_json(0, "/counters")["worker"]
        model = s.worker_json(0, "/model")
        state = (c.get("stats_sent", 0), c.get("stats_applied", 0), races and c.get("races_running", 0),
                 {a: m["version"] for a, m in model.items()})
        if state != last or state[0] != state[1] or state[2]:
            last, since = state, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return model
        time.sleep(0.2)
    raise AssertionError(f"model never settled: {last}")
