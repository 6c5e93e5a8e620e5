"""Gold feedback and hot LLM reconfiguration, end to end: Tansu broker, simulated LLMs over HTTP, a worker process."""

from __future__ import annotations

import base64
import collections
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from streams.harness.stack import LocalStack
from tests.streams.pipeline_kit import demo_events, expected_keys, fast_sim, settled_model

pytestmark = pytest.mark.integration


def stack(tmp_path, broker, topic_prefix, **kw) -> LocalStack:
    kw.setdefault("sim_config", fast_sim())
    kw.setdefault("endpoint_overrides", {"max_concurrency": 256, "timeout_s": 5})
    return LocalStack(tmp_path, broker=broker, topic_prefix=topic_prefix, **kw)


def wait_for(check: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def test_gold_feedback_teaches_the_learner_is_scored_and_bad_feedback_is_dead_lettered(tmp_path, broker,
                                                                                         topic_prefix):
    events, _ = demo_events(limit=150)
    with stack(tmp_path, broker, topic_prefix) as s:
        s.publish(events)
        decisions = s.decisions(expected_keys(events), timeout_s=60)
        before = settled_model(s, races=True)
        adopted_before = s.worker_json(0, "/counters")["worker"].get("races_adopted", 0)
        first = [d for d in decisions if d["revision"] == 0]
        attribute = collections.Counter(d["attribute"] for d in first).most_common(1)[0][0]
        classes = before[attribute]["classes"]
        # gold that always contradicts sim-tiny (another LLM's answer where there is one)
        chosen = [d for d in first if d["attribute"] == attribute and d["votes"].get("sim-tiny") is not None][:40]
        assert len(chosen) >= 30
        good = []
        for d in chosen:
            tiny = d["votes"]["sim-tiny"]
            others = [v for _, v in sorted(d["votes"].items()) if v is not None and v != tiny]
            gold = others[0] if others else next(c for c in classes if c != tiny)
            good.append({"product_id": d["product_id"], "version": 1, "attribute": attribute, "label": gold,
                         "source": "test-reviewer"})
        known = chosen[0]["product_id"]
        bad = {
            b"invalid-json": b'{"product_id": "x", ',
            b"no-label": orjson.dumps({"product_id": known, "attribute": attribute}),
            b"unknown-product": orjson.dumps({"product_id": "no-such-product", "attribute": attribute,
                                              "label": classes[0]}),
            b"bad-label": orjson.dumps({"product_id": known, "attribute": attribute, "label": "ultraviolet-ish"}),
            b"old-version": orjson.dumps({"product_id": known, "version": 7, "attribute": attribute,
                                          "label": classes[0]}),
        }
        records = [(f["product_id"].encode(), orjson.dumps(f)) for f in good]
        records.append((good[0]["product_id"].encode(), orjson.dumps(good[0])))  # the same label again
        records += [(known.encode() if k != b"invalid-json" else k, v) for k, v in bad.items()]
        s.produce("attribute_feedback", records)

        def done():
            c = s.worker_json(0, "/counters")["worker"]
            return c if c.get("feedback_in", 0) >= len(records) and c.get("gold_items_applied", 0) >= len(good) \
                else None

        counters = wait_for(done, 30, "feedback processed and folded by the learner")
        after = settled_model(s, races=True)  # gold records are records: the young model races on them too
        raced = s.worker_json(0, "/counters")["worker"].get("races_adopted", 0) - adopted_before
        scores = s.worker_json(0, "/feedback")
        with urllib.request.urlopen(f"http://127.0.0.1:{s.worker_port(0)}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        dead = [orjson.loads(m.value()) for m in s.read("dead_letter", until=len(bad), timeout_s=20)]

    # the learner folded each accepted label once, with the posterior clamped to it
    assert counters["feedback_applied"] == len(good) and counters["feedback_duplicates"] == 1
    assert counters["gold_records_applied"] == len(good) and counters["gold_items_applied"] == len(good)
    assert after[attribute]["version"] == before[attribute]["version"] + len(good) + raced, raced
    assert after[attribute]["n_items"] == pytest.approx(before[attribute]["n_items"] + len(good))
    tiny_before, tiny_after = before[attribute]["accuracy"]["sim-tiny"], after[attribute]["accuracy"]["sim-tiny"]
    assert tiny_after < tiny_before - 0.03, (tiny_before, tiny_after)
    assert after[attribute]["weight"]["sim-tiny"] < before[attribute]["weight"]["sim-tiny"]
    # evaluation: sim-tiny disagrees with every gold label; the ensemble is scored on every item
    assert scores[attribute]["sim-tiny"] == {"agree": 0, "disagree": len(good), "abstain": 0, "accuracy": 0.0}
    ens = scores[attribute]["ensemble"]
    assert ens["agree"] + ens["disagree"] + ens["abstain"] == len(good)
    assert (f'llmens_feedback_total{{attribute="{attribute}",llm="sim-tiny",outcome="disagree"}} '
            f'{float(len(good))}') in metrics
    # bad feedback: dead-lettered from the feedback topic with a reason naming what is wrong
    assert len(dead) == len(bad)
    assert all(d["source_topic"].endswith("attribute-feedback") for d in dead)
    by_original = {base64.b64decode(d["original_b64"]): d["error"] for d in dead}
    assert set(by_original) == set(bad.values())
    assert "invalid JSON" in by_original[bad[b"invalid-json"]]
    errors = sorted(by_original.values())
    for fragment in ("label: Field required", "unknown product 'no-such-product'",
                     "'ultraviolet-ish' is not in the label set", "version: feedback for version 7"):
        assert any(fragment in e for e in errors), (fragment, errors)


def _four_model_sim() -> dict:
    sim = fast_sim()
    models = sim["models"][:4]
    models[2].update(accuracy=0.45)  # the LLM to be replaced is poor: the votes tell the LLMs apart, not ``pooled``
    new = models[3]  # a fourth model the workers are not configured with at first; very accurate
    new.update(name="sim-new", family="sim-new", accuracy=0.97, none_bias=None, confusions={}, class_bias={})
    sim["models"] = models
    return sim


def sim_served(s: LocalStack) -> dict[str, int]:
    with urllib.request.urlopen(f"{s.sim_url}/sim/stats", timeout=5) as r:
        return {n: v["served"] for n, v in orjson.loads(r.read()).items()}


def test_llms_added_and_removed_in_a_running_worker_without_restart(tmp_path, broker, topic_prefix):
    sim = _four_model_sim()
    a, b, c, d = (m["name"] for m in sim["models"])
    first, _ = demo_events(limit=80)
    second = [e for e in demo_events(copies=2, limit=80, distinct_text=True)[0] if "~" in e["product_id"]]
    with stack(tmp_path, broker, topic_prefix, sim_config=sim, llm_names=[a, b, c],
               settings_overrides={"config_reload_seconds": 0.5}) as s:
        pid = s.procs[0].pid
        s.publish(first)
        before = [x for x in s.decisions(expected_keys(first), timeout_s=60) if x["revision"] == 0]
        # an invalid edit is refused, counted, and the running LLMs are kept
        s.write_config({**s.config_data, "llms": [{"name": "broken", "model": "m"}]})
        wait_for(lambda: s.worker_json(0, "/counters")["worker"].get("config_reload_errors", 0) >= 1, 15,
                 "the invalid config to be refused")
        s.set_llms([a, b, d])  # drop c, add d
        wait_for(lambda: s.worker_json(0, "/counters")["worker"].get("config_reloads", 0) >= 1, 15,
                 "the new LLM list to be applied")
        served = sim_served(s)
        s.publish(second)
        decisions = s.decisions(expected_keys(first) | expected_keys(second), timeout_s=60)
        model = settled_model(s, races=True)
        counters = s.worker_json(0, "/counters")
        served_after = sim_served(s)
        assert s.procs[0].pid == pid and s.procs[0].poll() is None  # the same worker process throughout

    assert all(set(x["votes"]) == {a, b, c} for x in before)
    second_ids = {e["product_id"] for e in second}
    later = [x for x in decisions if x["product_id"] in second_ids and x["revision"] == 0]
    assert len(later) == len(expected_keys(second))
    assert all(set(x["votes"]) == {a, b, d} for x in later), collections.Counter(
        tuple(sorted(x["votes"])) for x in later)
    assert served_after[c] == served[c], "a removed LLM must not be asked"
    assert served_after[d] >= len(second) and served[d] == 0
    w = counters["worker"]
    assert w["config_reloads"] == 1 and w["config_reload_errors"] == 1
    assert w["llms_added"] == 1 and w["llms_removed"] == 1
    # the new LLM is in every attribute's model. Where the chosen candidate tells LLMs apart (``pooled`` gives
    # them all one accuracy; it won every attribute once when the replaced LLM was 0.78 accurate and the model was
    # read before the races ended), it earned its weight from its votes: accuracy 0.97 in the simulator against the
    # prior's 0.7, and more weight than the 0.45 one it replaced
    attributes = {x["attribute"] for x in later}
    assert all(d in model[at]["weight"] for at in attributes), {at: model[at]["workers"] for at in attributes}
    apart = [at for at in attributes if model[at]["candidate"].split("+")[0] != "pooled"]
    assert apart, {at: model[at]["candidate"] for at in attributes}
    for at in apart:
        assert model[at]["accuracy"][d] > 0.8, (at, model[at]["candidate"], model[at]["accuracy"])
        assert model[at]["weight"][d] > model[at]["weight"][c], (at, model[at]["candidate"], model[at]["weight"])
