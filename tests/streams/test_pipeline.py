"""End to end through real processes: Tansu broker, simulated LLMs over HTTP, `llmens worker` processes."""

from __future__ import annotations

import collections
import signal
import time

import orjson
import pytest

from llmens_core.scoring import recorded_attributes, score_decisions
from streams.harness.stack import LocalStack
from tests.conftest import shared_data
from tests.streams.pipeline_kit import (
    decision_keys,
    demo_events,
    expected_keys,
    fast_sim,
    settled_model,
    wait_until_every_worker_has_partitions,
)

pytestmark = pytest.mark.integration


def stack(tmp_path, broker, topic_prefix, **kw) -> LocalStack:
    kw.setdefault("sim_config", fast_sim())
    # a generous timeout: on a loaded 2-core machine answers stall, and timeouts open breakers
    kw.setdefault("endpoint_overrides", {"max_concurrency": 256, "timeout_s": 20})
    return LocalStack(tmp_path, broker=broker, topic_prefix=topic_prefix, **kw)


def test_each_asked_attribute_decided_once_and_ensemble_beats_every_single_model(tmp_path, broker,
                                                                                  topic_prefix):
    events, gold = demo_events()
    with stack(tmp_path, broker, topic_prefix, settings_overrides={"aggregation": {"revise_seconds": 1.0}}) as s:
        s.publish(events)
        s.decisions(expected_keys(events), timeout_s=120)
        model = settled_model(s)  # the learner has learnt every decided item
        decisions = s.decisions(expected_keys(events), timeout_s=120, settle_s=3.0)  # with the revisions it made
        counters = s.worker_json(0, "/counters")
    first = [d for d in decisions if d["revision"] == 0]
    keys = decision_keys(first)
    assert set(keys) == expected_keys(events) and max(keys.values()) == 1
    revised = [d for d in decisions if d["revision"] > 0]
    assert len(revised) == counters["worker"].get("revisions", 0)
    assert all(d["reason"] == "revision" for d in revised)
    acc = score_decisions(decisions, gold)  # the latest revision of each decision
    for attribute, row in acc.items():
        singles = {k: v for k, v in row.items() if k.startswith("sim-")}
        assert row["ensemble"] >= max(singles.values()), (attribute, row)
    pooled = sum(r["ensemble"] * r["n"] for r in acc.values()) / sum(r["n"] for r in acc.values())
    best = max(sum(r[m] * r["n"] for r in acc.values()) for m in ("sim-large", "sim-careful"))
    assert pooled > best / sum(r["n"] for r in acc.values())
    assert counters["llm"]["sim-large"]["requests"] >= len(events)
    assert model["gender"]["version"] >= 1, counters
    assert set(model["gender"]["accuracy"]) >= {"sim-large", "sim-tiny"}


def test_bad_input_goes_to_dead_letter_with_reason_and_the_stream_goes_on(tmp_path, broker, topic_prefix):
    events, _ = demo_events(limit=100)
    bad = [
        (b"p-bytes", b"\xff\xfe\x00 not utf-8"),
        (b"p-json", b"{\"product_id\": \"x\", "),
        (b"p-array", b"[1, 2, 3]"),
        (b"p-missing", orjson.dumps({"product_id": "m1", "title": "t"})),
        (b"p-type", orjson.dumps({"product_id": "m2", "version": "seven", "title": "t"})),
        (b"p-big", orjson.dumps({"product_id": "m3", "version": 1, "title": "x" * 200_000})),
        (b"p-attr", orjson.dumps({"product_id": "m4", "version": 1, "title": "t", "attributes": ["bogus"]})),
        (None, b""),
    ]
    mixed = []
    for i, e in enumerate(events):
        mixed.append((e["product_id"].encode(), orjson.dumps(e)))
        if i < len(bad):
            mixed.append(bad[i])
    with stack(tmp_path, broker, topic_prefix, settings_overrides={"max_event_bytes": 65536}) as s:
        s.produce("product_updates", mixed)
        decisions = s.decisions(expected_keys(events), timeout_s=120)
        dead = s.read("dead_letter", until=len(bad), timeout_s=30)
    assert set(decision_keys(decisions)) == expected_keys(events)
    letters = [orjson.loads(m.value()) for m in dead]
    assert len(letters) == len(bad)
    reasons = " | ".join(sorted(d["error"] for d in letters))
    for fragment in ("invalid JSON", "must be a JSON object", "version", "too large", "unknown attribute"):
        assert fragment in reasons, reasons
    by_key = {d["key_b64"]: d for d in letters}
    import base64

    original = by_key[base64.b64encode(b"p-bytes").decode()]
    assert base64.b64decode(original["original_b64"]) == b"\xff\xfe\x00 not utf-8"
    assert original["source_topic"].endswith("product-updates") and original["offset"] >= 0


def test_newer_version_supersedes_and_redelivery_repeats_the_same_decision(tmp_path, broker, topic_prefix):
    events, _ = demo_events(limit=20)
    v2 = [{**e, "version": 2} for e in events[:10]]
    late_v1 = events[:10]
    with stack(tmp_path, broker, topic_prefix) as s:
        s.publish(v2)
        s.decisions(expected_keys(v2), timeout_s=60)
        calls_before = sum(c["requests"] for c in s.worker_json(0, "/counters")["llm"].values())
        s.publish(late_v1)   # older versions arriving late: dropped, counted
        s.publish(v2[:5])    # redelivery of the same versions: same decisions, no LLM calls
        s.publish(events[10:])
        want = expected_keys(v2) | expected_keys(events[10:])
        decisions = s.decisions(want, timeout_s=60, settle_s=2.0)
        counters = s.worker_json(0, "/counters")
    keys = decision_keys(decisions)
    assert not any(v == 1 and pid in {e["product_id"] for e in late_v1} for pid, v, _ in keys)
    assert counters["worker"]["superseded"] == len(late_v1)
    assert counters["worker"]["redelivered"] == 5
    calls_after = sum(c["requests"] for c in counters["llm"].values())
    assert calls_after - calls_before == 5 * len(events[10:])
    by_key: dict = {}
    for d in decisions:
        by_key.setdefault((d["product_id"], d["version"], d["attribute"], d["revision"]), set()).add(d["value"])
    assert all(len(vals) == 1 for vals in by_key.values())
    assert set(keys) == want


def test_retry_waits_for_open_breakers_instead_of_dead_lettering(tmp_path, broker, topic_prefix):
    """Every LLM's first request fails and opens its breaker (threshold 1, cool-down 2 s); the product whose
    calls failed retries once 0.05 s later by configuration, but not before a breaker lets a probe through.
    One product, so every LLM's failing first request is its own."""
    events, _ = demo_events(limit=1)
    sim = fast_sim(burst_429={"status": 503, "start": 0, "length": 1})
    with stack(tmp_path, broker, topic_prefix, sim_config=sim,
               endpoint_overrides={"max_retries": 0, "timeout_s": 5, "breaker_failures": 1,
                                   "breaker_cooldown_s": 2.0},
               settings_overrides={"all_failed_retries": 1, "all_failed_backoff_s": 0.05}) as s:
        s.publish(events)
        decisions = s.decisions(expected_keys(events), timeout_s=60)
        dead = s.read("dead_letter", idle_s=1.0, timeout_s=3)
        counters = s.worker_json(0, "/counters")["worker"]
    assert set(decision_keys(decisions)) == expected_keys(events) and not dead
    assert counters.get("all_failed_attempts", 0) >= 1, counters  # the retry path was taken


def test_product_whose_llms_all_fail_is_retried_then_dead_lettered(tmp_path, broker, topic_prefix):
    events, _ = demo_events(limit=3)
    sim = fast_sim(faults={"http_500": 1.0})
    with stack(tmp_path, broker, topic_prefix, sim_config=sim,
               endpoint_overrides={"max_retries": 0, "timeout_s": 2},
               settings_overrides={"all_failed_retries": 1, "all_failed_backoff_s": 0.1}) as s:
        s.publish(events)
        dead = s.read("dead_letter", until=len(events), timeout_s=60)
        decided = s.read("product_attributes", idle_s=1.0, timeout_s=3)
    letters = [orjson.loads(m.value()) for m in dead]
    assert len(letters) == len(events) and not decided
    assert all("every LLM failed after 2 attempts" in d["error"] and "http_500" in d["error"] for d in letters)


@pytest.mark.slow
def test_two_workers_split_partitions_and_a_killed_worker_loses_no_decision(tmp_path, broker, topic_prefix):
    events, gold = demo_events(copies=10)  # 4,000 products: the kill lands with thousands still to decide
    with stack(tmp_path, broker, topic_prefix, workers=2, partitions=8, sim_config=fast_sim(latency_ms=2),
               worker_loglevel="info") as s:
        s.publish(events)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            before_kill = [s.worker_json(i, "/counters")["worker"].get("decisions", 0) for i in (0, 1)]
            if sum(before_kill) > 1200:
                break
            time.sleep(0.2)
        s.kill_worker(1, signal.SIGKILL)
        time.sleep(1.0)
        s.start_worker(1)
        s.wait_worker_ready(1)
        want = expected_keys(events)
        msgs = s.read("product_attributes", timeout_s=300, idle_s=60,
                      stop=lambda ms: len(ms) >= len(want) and len(decision_keys(
                          orjson.loads(m.value()) for m in ms)) == len(want))
        counters = [s.worker_json(i, "/counters")["worker"] for i in (0, 1)]
    decisions = [orjson.loads(m.value()) for m in msgs]
    keys = decision_keys(decisions)
    assert set(keys) == want, f"missing {len(want - set(keys))}; workers: {counters}"
    values: dict = {}
    for d in decisions:
        values.setdefault((d["product_id"], d["version"], d["attribute"], d["revision"]), set()).add(d["value"])
    differing = {k: v for k, v in values.items() if len(v) > 1}
    assert not differing, f"duplicates with different values: {list(differing.items())[:5]}"
    # both decided before the kill (the restarted worker may find its partitions' work done by the other)
    assert all(n > 0 for n in before_kill), (before_kill, counters)
    # A model corrupted by the kill would fall far below majority vote. Per attribute the margin is wide:
    # each product is repeated 10 times, so one product decided differently moves gender (106 products) by
    # ~0.01, and gender sat 0.2-1.0 points below majority vote in runs that passed (once 2+ in a failed one).
    acc = score_decisions(decisions, gold)
    below = {a: (row["n"], round(row["ensemble"], 4), round(row["majority_vote"], 4)) for a, row in acc.items()
             if row["ensemble"] < row["majority_vote"] - 0.05}
    assert not below, f"(n, ensemble, majority vote) far below majority vote: {below}; all: {acc}"
    n = sum(r["n"] for r in acc.values())
    pooled = {k: sum(r[k] * r["n"] for r in acc.values()) / n for k in ("ensemble", "majority_vote")}
    # issue 11's bar ("never more than 0.5 point below majority vote"); the evidence-chosen DS model under
    # kills scored 0.9759 vs 0.9777 once (issue 11 stays open until it is at or above majority vote again)
    assert pooled["ensemble"] >= pooled["majority_vote"] - 0.005, pooled


def test_replay_of_recorded_gpt_runs_ends_at_the_batch_default_s_decisions(tmp_path, broker, topic_prefix):
    """The 10 recorded GPT runs replayed through the stream: once the learner has learnt every flush, the quiet
    stream's settling race has raced each young model on all its items, and the revisions are out, each attribute is
    decided as the batch default decides it on all the votes, give or take two gold items (the race's folds follow
    the stream's item order, not the file's). Before the settling race, the last flushes were plain online steps after
    the last growth race, and how many depended on timing: material differed on 2, and once 4, of its 32."""
    predictions = shared_data("llm_predictions", "predictions.jsonl")
    products = shared_data("llm_predictions", "products.jsonl")
    asked = recorded_attributes(predictions)
    events, gold_src = [], []
    for line in products.read_bytes().splitlines():
        p = orjson.loads(line)
        events.append({"product_id": p["product_id"], "version": 1, "title": p["title"],
                       "description": p.get("description"), "category": p.get("category"),
                       "attributes": sorted(asked[p["product_id"]])})
        gold_src.append(p)
    from llmens_core.aggregation import default_aggregator
    from llmens_core.scoring import gold_labels, latest_decisions

    gold = gold_labels(gold_src)
    with LocalStack(tmp_path, broker=broker, topic_prefix=topic_prefix, replay=predictions,
                    sim_config=None, endpoint_overrides={"max_concurrency": 256, "timeout_s": 20},
                    settings_overrides={"aggregation": {"revise_seconds": 1.0}}) as s:
        s.publish(events)
        s.decisions(expected_keys(events), timeout_s=120)
        settled_model(s, races=True)
        decisions = s.decisions(expected_keys(events), timeout_s=120, settle_s=4.0)
    assert set(decision_keys(d for d in decisions if d["revision"] == 0)) == expected_keys(events)
    latest = {(pid, attribute): d for (pid, _, attribute), d in latest_decisions(decisions).items()}
    votes = collections.defaultdict(list)
    for line in predictions.read_bytes().splitlines():
        r = orjson.loads(line)
        if r.get("value") is not None:
            votes[r["attribute"]].append((r["product_id"], r["model"], r["value"]))
    for attribute, rows in sorted(votes.items()):
        batch = default_aggregator().fit(*zip(*rows, strict=True))
        differ = [i for i, v in zip(batch.items_.tolist(), batch.predict().tolist(), strict=True)
                  if (i, attribute) in gold and latest[(i, attribute)]["value"] != v]
        assert len(differ) <= 2, (attribute, [(i, latest[(i, attribute)]["value"], gold[(i, attribute)]) for i in differ], batch.choice_)


@pytest.mark.parametrize("rule", ["gain", pytest.param("confidence", marks=pytest.mark.xfail(
    strict=False, reason="issue 14 open: under the evidence-chosen DS model (issue 11) cheapest-first LLMs rarely "
    "reach confidence 0.9, so the legacy confidence rule asks ~98% of the calls (1,972 of 2,000 here)"))])
def test_adaptive_querying_asks_fewer_llms_and_records_why_it_stopped(tmp_path, broker, topic_prefix, rule):
    events, gold = demo_events()
    adaptive = {"enabled": True, "rule": rule, "confidence_target": 0.9, "exploration_share": 0.1,
                "first_stage": 2}
    with stack(tmp_path, broker, topic_prefix, settings_overrides={"adaptive": adaptive}) as s:
        s.publish(events)
        decisions = s.decisions(expected_keys(events), timeout_s=120)
        counters = s.worker_json(0, "/counters")
    first = [d for d in decisions if d["revision"] == 0]
    assert set(decision_keys(first)) == expected_keys(events) and max(decision_keys(first).values()) == 1
    assert all(d["reason"] == "adaptive" and d["stopped"] in ("warmup", "explore", "confident", "exhausted") for d in first)
    calls = sum(c["requests"] for c in counters["llm"].values())
    print(f"adaptive[{rule}]: {calls} calls for {len(events)} products")
    assert calls < 0.8 * 5 * len(events), calls
    explored = {d["product_id"] for d in first if d["stopped"] == "explore"}
    assert 0.03 * len(events) < len(explored) < 0.2 * len(events)
    assert all(len(d["asked"]) == 5 for d in first if d["stopped"] in ("explore", "warmup"))
    assert any(d["stopped"] == "warmup" for d in first)  # cold DS models ask everyone first
    assert all(len(d["asked"]) >= 2 for d in first)  # the first stage holds two LLMs
    confident = [d for d in first if d["stopped"] == "confident"]
    assert confident and any(len(d["asked"]) < 5 for d in confident)
    if rule == "confidence":
        cheap = {"sim-tiny", "sim-small"}  # cheapest first
        assert all(cheap <= set(d["asked"]) for d in first)
        assert all(d["confidence"] >= 0.9 for d in confident)
    acc = score_decisions(decisions, gold)
    pooled = sum(r["ensemble"] * r["n"] for r in acc.values()) / sum(r["n"] for r in acc.values())
    # a floor, not the goal (issue 14): the gain rule gave 0.900-0.914 in 21 runs, so a floor of 0.9 failed by
    # chance; in two instrumented runs its confident stops after two LLMs were 81-84 % right, full panels 98 %
    assert pooled > 0.88, acc


BAD_KINDS = [
    b"\xff\xfe\x00 not utf-8",
    b"{\"product_id\": \"x\", ",
    b"[1, 2, 3]",
    b'{"title": "no id or version"}',
    b'{"product_id": "m", "version": "seven", "title": "t"}',
    b'{"product_id": "m", "version": 1, "title": "t", "attributes": ["bogus"]}',
    b'{"product_id": "m", "version": -3, "title": "t"}',
    b"",
]


@pytest.mark.slow
def test_four_hundred_malformed_events_among_two_thousand_good_ones(tmp_path, broker, topic_prefix):
    events, _ = demo_events(copies=5)
    events = events[:2000]
    records, n_bad = [], 0
    for i, e in enumerate(events):
        records.append((e["product_id"].encode(), orjson.dumps(e)))
        if i % 5 == 0:
            records.append((f"bad-{n_bad}".encode(), BAD_KINDS[n_bad % len(BAD_KINDS)]))
            n_bad += 1
    assert n_bad == 400
    with stack(tmp_path, broker, topic_prefix) as s:
        s.produce("product_updates", records)
        decisions = s.decisions(expected_keys(events), timeout_s=300)
        dead = s.read("dead_letter", idle_s=3.0, timeout_s=60)
    assert set(decision_keys(d for d in decisions if d["revision"] == 0)) == expected_keys(events)
    assert len(dead) == 400
    assert {m.key() for m in dead} == {f"bad-{i}".encode() for i in range(400)}


@pytest.mark.slow
def test_two_workers_split_the_partitions_and_match_one_worker(tmp_path, broker, topic_prefix):
    events, gold = demo_events(copies=2, distinct_text=True)
    pooled, majority = {}, {}
    for workers in (1, 2):
        prefix = f"{topic_prefix}w{workers}."
        # the claim is about decisions after the final model's revisions: re-score every second, read until
        # 6 s pass without a record
        with stack(tmp_path / f"w{workers}", broker, prefix, workers=workers, partitions=8,
                   settings_overrides={"aggregation": {"revise_seconds": 1.0}}) as s:
            wait_until_every_worker_has_partitions(s, workers)
            s.publish(events)
            decisions = s.decisions(expected_keys(events), timeout_s=180, settle_s=6.0)
            counters = [s.worker_json(i, "/counters")["worker"] for i in range(workers)]
        assert set(decision_keys(d for d in decisions if d["revision"] == 0)) == expected_keys(events)
        assert all(c.get("events_in", 0) > 0 for c in counters), counters
        acc = score_decisions(decisions, gold)
        n = sum(r["n"] for r in acc.values())
        pooled[workers] = sum(r["ensemble"] * r["n"] for r in acc.values()) / n
        majority[workers] = sum(r["majority_vote"] * r["n"] for r in acc.values()) / n
    # The learner folds the workers' deltas in arrival order, so runs differ by a few borderline products
    # (each one counted twice, as copies): 1,344 decisions differed by up to 14 (1.04 points) between a
    # one- and a two-worker run, and by up to 10 between one-worker runs. Scale-out must not cost accuracy
    # beyond that spread, nor fall below majority vote by more than issue 11's bar.
    assert abs(pooled[2] - pooled[1]) <= 0.015, pooled
    assert all(pooled[w] >= majority[w] - 0.005 for w in pooled), (pooled, majority)
