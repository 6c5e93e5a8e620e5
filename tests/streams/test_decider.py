"""The decision path and the feedback path in-process: faust's own test support, real RocksDB, real HTTP LLMs.

Events enter through ``agent.test_context()``; outputs are faust channels read back here; product state is a
RocksDB directory; the LLMs are the project's simulator over HTTP on loopback. The same contract is proved on
a real broker by ``test_pipeline.py``; these tests pin each rule of docs/delivery.md at the unit level.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from typing import Any

import faust
import orjson
import pytest

from llmens_core.events import AttributeDecision, DeadLetter
from llmens_core.llm.simulator import SIM_KEY, SimConfig, endpoints_for, start_simulator
from streams.decider import ProductDecider
from streams.faust_ext.commit_guard import mark_finished
from streams.feedback import FeedbackApplier
from streams.outputs import DEAD_LETTER_KEEP_BYTES, OutputChannels, Outputs
from streams.settings import Settings
from streams.state import RocksStore
from streams.worker import Worker


def _demo_product() -> dict:
    raw = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    return next(r for r in map(orjson.loads, raw.splitlines()) if "gender" in (r.get("attributes") or {}))


@dataclass
class Rig:
    """One worker's decision path, fed and read in-process."""

    app: faust.App
    worker: Worker
    decider: ProductDecider
    feedback: FeedbackApplier
    store: RocksStore
    read: dict[str, Any]
    sim: Any
    agent: Any
    feedback_agent: Any
    handled: asyncio.Condition
    done: dict[str, int]

    async def put(self, value: bytes, key: bytes, *, feedback: bool = False) -> None:
        """Send one event to the decider (or the feedback agent) and wait until it was handled."""
        name = "feedback" if feedback else "decide"
        async with self.handled:
            want = self.done[name] + 1
            await (self.feedback_agent if feedback else self.agent).put(value, key=key, wait=False)
            await asyncio.wait_for(self.handled.wait_for(lambda: self.done[name] >= want), 30)

    def served(self) -> int:
        return sum(m.served for m in self.sim.models.values())

    def drain(self, name: str) -> list[bytes]:
        queue, out = self.read[name], []
        while not queue.empty():
            out.append(queue.queue.get_nowait().value)
        return out

    def decisions(self) -> list[AttributeDecision]:
        return [AttributeDecision.model_validate_json(v) for v in self.drain("decisions")]


def _event(product: dict, version: int, attributes: list[str]) -> bytes:
    return orjson.dumps({"product_id": product["product_id"], "version": version, "title": product["title"],
                         "description": product.get("description"), "attributes": attributes})


@pytest.fixture
async def rig(tmp_path, request):
    """The decision path; ``indirect`` parametrisation passes more settings (e.g. adaptive querying)."""
    from streams.app import _adaptive_policy

    models = [{"name": n, "accuracy": a} for n, a in (("sim-a", 0.9), ("sim-b", 0.8), ("sim-c", 0.7))]
    config = SimConfig.model_validate({"mode": "confusion", "seed": 5, "models": models,
                                       "defaults": {"latency_ms": {"mean": 0}, "faults": {}}})
    runner, port = await start_simulator(config)
    settings = Settings(llms=endpoints_for(config, f"http://127.0.0.1:{port}/v1"), data_dir=tmp_path / "data",
                        all_failed_retries=0, all_failed_backoff_s=0.0, **getattr(request, "param", {}))
    w = Worker(settings)
    w.registry.ready.set()  # cold DS models: no ds-model topic in-process
    if w.students is not None:
        w.students.ready.set()
    app = faust.App("decider-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    app.flow_control.resume()
    channels = {name: app.channel() for name in ("decisions", "review", "votes", "dead_letter", "stats")}
    read = {name: ch.clone(is_iterator=True) for name, ch in channels.items()}
    outputs = Outputs(OutputChannels(**channels), w.metrics, w.counters, review_below=0.999)
    store = RocksStore(tmp_path / "products")
    decider = ProductDecider(w, outputs, store, policy=_adaptive_policy(settings))
    applier = FeedbackApplier(w, store, outputs)

    handled, done = asyncio.Condition(), {"decide": 0, "feedback": 0}

    async def count(name: str) -> None:
        async with handled:
            done[name] += 1
            handled.notify_all()

    @app.agent(app.channel())
    async def decide(stream):
        async for event in stream.events():
            if await decider.handle(event):
                mark_finished(event.message)
            await count("decide")

    @app.agent(app.channel())
    async def feedback(stream):
        async for event in stream.events():
            await applier.handle(event)
            await count("feedback")

    async with decide.test_context() as agent, feedback.test_context() as fb_agent:
        yield Rig(app, w, decider, applier, store, read, runner.app[SIM_KEY], agent, fb_agent, handled, done)
    await w.close()
    store.close()
    await runner.cleanup()


async def test_a_decision_is_stored_before_it_is_emitted_and_low_confidence_goes_to_review(rig):
    product = _demo_product()
    await rig.put(_event(product, 1, ["gender"]), product["product_id"].encode())
    (decision,) = rig.decisions()
    stored = rig.store.get(product["product_id"])
    assert stored["version"] == 1 and stored["decisions"]["gender"]["value"] == decision.value
    assert set(decision.votes) == {"sim-a", "sim-b", "sim-c"} and rig.served() == 3
    assert [AttributeDecision.model_validate_json(v).confidence for v in rig.drain("review")] == [decision.confidence]
    (votes,) = rig.drain("votes")
    assert {v["llm"] for v in orjson.loads(votes)} == {"sim-a", "sim-b", "sim-c"}


async def test_a_redelivered_event_gives_the_same_decision_without_asking_any_llm(rig):
    product = _demo_product()
    await rig.put(_event(product, 1, ["gender"]), product["product_id"].encode())
    (first,) = rig.decisions()
    served = rig.served()
    await rig.put(_event(product, 1, ["gender"]), product["product_id"].encode())
    (again,) = rig.decisions()
    assert again == first and rig.served() == served
    assert rig.worker.counters["redelivered"] == 1 and not rig.drain("votes")[1:]


async def test_an_older_version_than_the_one_stored_is_dropped(rig):
    product = _demo_product()
    await rig.put(_event(product, 2, ["gender"]), product["product_id"].encode())
    assert len(rig.decisions()) == 1
    served = rig.served()
    await rig.put(_event(product, 1, ["gender"]), product["product_id"].encode())
    assert rig.decisions() == [] and rig.served() == served
    assert rig.store.get(product["product_id"])["version"] == 2 and rig.worker.counters["superseded"] == 1


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "invalid"),
    (orjson.dumps({"product_id": "p1", "version": 1, "title": "T", "attributes": ["no_such"]}), "unknown attribute"),
    (orjson.dumps({"version": 1, "title": "T"}), "product_id"),
])
async def test_a_bad_event_goes_to_the_dead_letter_topic_with_its_reason(rig, value, reason):
    await rig.put(value, b"k")
    (raw,) = rig.drain("dead_letter")
    dl = DeadLetter.from_bytes(raw)
    assert reason in dl.error.lower() and dl.original == value and not dl.truncated
    assert rig.decisions() == [] and rig.served() == 0


async def test_an_oversized_event_is_dead_lettered_as_a_truncated_copy(rig):
    value = orjson.dumps({"product_id": "big", "version": 1, "title": "x" * 2_000_000})
    await rig.put(value, b"big")
    (raw,) = rig.drain("dead_letter")
    dl = DeadLetter.from_bytes(raw)
    assert "too large" in dl.error and dl.truncated and dl.original_size == len(value)
    assert dl.original == value[:DEAD_LETTER_KEEP_BYTES] and len(raw) < 1_000_000


async def test_when_every_llm_fails_the_product_is_dead_lettered_with_each_error(rig):
    for model in rig.sim.models.values():
        model.faults = model.faults.model_copy(update={"http_500": 1.0})
    product = _demo_product()
    await rig.put(_event(product, 1, ["gender"]), product["product_id"].encode())
    (raw,) = rig.drain("dead_letter")
    dl = DeadLetter.from_bytes(raw)
    assert dl.error.startswith("every LLM failed after 1 attempts") and all(n in dl.error for n in ("sim-a", "sim-b"))
    assert rig.decisions() == [] and rig.store.get(product["product_id"]) is None


async def test_feedback_on_a_decision_reaches_the_learner_once_and_scores_every_llm(rig):
    product = _demo_product()
    pid = product["product_id"]
    await rig.put(_event(product, 1, ["gender"]), pid.encode())
    (decision,) = rig.decisions()
    assert decision.value is not None
    gold = orjson.dumps({"product_id": pid, "attribute": "gender", "label": decision.value})
    rig.drain("stats")
    await rig.put(gold, pid.encode(), feedback=True)
    await rig.put(gold, pid.encode(), feedback=True)  # a double submission counts once
    (record,) = [orjson.loads(v) for v in rig.drain("stats")]
    assert record["attribute"] == "gender" and record["gold"][0]["label"] == decision.value
    assert rig.store.get(pid)["gold"] == {"gender": decision.value}
    scores = rig.feedback.scores.as_dict()["gender"]
    assert set(scores) == {"ensemble", "sim-a", "sim-b", "sim-c"} and scores["ensemble"]["agree"] == 1
    assert rig.worker.counters["feedback_duplicates"] == 1


async def test_feedback_for_an_unknown_product_is_dead_lettered(rig):
    fb = orjson.dumps({"product_id": "never-seen", "attribute": "gender", "label": "men"})
    await rig.put(fb, b"never-seen", feedback=True)
    (raw,) = rig.drain("dead_letter")
    assert "unknown product 'never-seen'" in DeadLetter.from_bytes(raw).error
    assert rig.drain("stats") == []


STUDENT_ON = {"adaptive": {"enabled": True, "warmup_items": 0, "exploration_share": 0.0},
              "student": {"exploration_share": 0.0, "target": 0.8, "min_scored": 10}}


def _teach_student_and_model(w: Worker) -> None:
    """A licensed gender student (its word decides the label) and a DS model that learnt it is right 99 % of the
    time where the LLMs answered beside it: its lone vote settles the posterior."""
    import numpy as np

    from streams.students import learn_student

    rng = np.random.default_rng(0)
    word = {"male": "men's", "female": "women's", "unisex": "unisex"}
    student = w.students.cold("gender")
    for _ in range(6):
        labels = [list(word)[k] for k in rng.integers(3, size=50)]
        learn_student(student, [{"teach": {"texts": [f"brand{rng.integers(9)} {word[lab]} shoe" for lab in labels],
                                           "labels": labels, "weights": [1.0] * 50}}])
    assert student.summary()["text"]["threshold"] is not None
    w.students.offer("gender", student.freeze())
    model = w.registry.cold("gender")
    items, workers, labels = [], [], []
    for i in range(400):
        truth = list(word)[rng.integers(3)]
        for name, acc in (("sim-a", 0.9), ("sim-b", 0.8), ("sim-c", 0.7), ("student", 0.99)):
            items.append(i)
            workers.append(name)
            labels.append(truth if rng.random() < acc else list(word)[rng.integers(3)])
    for _ in range(3):
        model.partial_fit(items, workers, labels, race=False)
    assert w.registry.offer("gender", model)


@pytest.mark.parametrize("rig", [STUDENT_ON], indirect=True)
async def test_a_licensed_student_decides_alone_with_no_llm_call_and_gold_teaches_it(rig):
    _teach_student_and_model(rig.worker)
    await rig.put(_event({"product_id": "s1", "title": "brand3 women's shoe size 38"}, 1, ["gender"]), b"s1")
    (decision,) = rig.decisions()
    assert decision.stopped == "student" and decision.votes == {"student": "female"} and decision.value == "female"
    assert rig.served() == 0 and orjson.loads(rig.drain("votes")[0]) == []
    assert rig.store.get("s1")["text"] == "brand3 women's shoe size 38"
    assert rig.worker.counters["student_alone"] == 1 and rig.worker.metrics.student_roles() == {"gender": {"alone": 1}}
    await rig.decider.flush_stats("gender")
    assert rig.drain("stats") == []  # a lone student vote teaches neither the DS model nor the student
    await rig.put(orjson.dumps({"product_id": "s1", "attribute": "gender", "label": "female"}), b"s1", feedback=True)
    (gold,) = [orjson.loads(v) for v in rig.drain("stats")]
    assert gold["gold"][0]["text"] == "brand3 women's shoe size 38" and gold["gold"][0]["votes"] == {"student": "female"}


@pytest.mark.parametrize("rig", [STUDENT_ON], indirect=True)
async def test_an_abstaining_student_sends_the_product_to_the_llms_and_learns_their_decision(rig):
    _teach_student_and_model(rig.worker)
    title = "zzqx vvbn"  # words the student never learnt: it abstains
    await rig.put(_event({"product_id": "s2", "title": title}, 1, ["gender"]), b"s2")
    (decision,) = rig.decisions()
    assert decision.stopped != "student" and "student" not in decision.votes and rig.served() >= 1
    assert rig.worker.counters["student_abstain"] == 1
    await rig.decider.flush_stats("gender")
    records = [orjson.loads(v) for v in rig.drain("stats")]
    (teach,) = [r["teach"] for r in records if "teach" in r]
    assert teach["texts"] == [title] and teach["labels"] == [decision.value] and 0 < teach["weights"][0] <= 1
    assert any("votes" in r for r in records)
