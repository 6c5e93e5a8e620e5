"""The students' stream side without a broker: registry, learning the ds-stats records, publishing, settings, metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llmens_core.schema import AttributeSchema
from llmens_core.student import AttributeStudent
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.students import StudentLearner, StudentRegistry, has_student_part, learn_student
from streams.topics import topic_specs

WORDS = {"male": "men's", "female": "women's", "unisex": "unisex"}


def teach(n: int, seed: int = 0) -> dict:
    """A ``teach`` record for gender: the label's word in a title with noise words."""
    rng = np.random.default_rng(seed)
    labels = [list(WORDS)[k] for k in rng.integers(3, size=n)]
    texts = [f"brand{rng.integers(9)} {WORDS[lab]} shoe size {rng.integers(30, 50)}" for lab in labels]
    return {"attribute": "gender", "teach": {"texts": texts, "labels": labels, "weights": [0.9] * n}}


def settings(**student) -> Settings:
    return Settings(adaptive={"enabled": True}, student={"min_scored": 10, **student})


def test_the_student_follows_adaptive_querying_unless_set():
    assert not Settings().student.active(Settings().adaptive)
    on = settings()
    assert on.student.active(on.adaptive) and on.student.licence_target(on.adaptive) == pytest.approx(0.97)
    off = Settings(adaptive={"enabled": True}, student={"enabled": False})
    assert not off.student.active(off.adaptive)
    legacy = Settings(adaptive={"enabled": True, "rule": "confidence"})
    assert not legacy.student.active(legacy.adaptive)  # only the gain rule reads the student's vote
    spec = {s.name: s for s in topic_specs(on)}["llmens.student-model"]
    assert spec.config["cleanup.policy"] == "compact" and int(spec.config["max.message.bytes"]) > 2**20


def test_learn_student_learns_teach_and_gold_records_and_skips_bad_ones():
    student = AttributeStudent(["male", "female", "unisex", "none"])
    counters: dict = {}
    gold = {"attribute": "gender", "gold": [{"label": "female", "votes": {"sim-a": "male"},
                                             "text": "brand1 women's shoe size 38"},
                                            {"label": "male", "votes": {"sim-a": "male"}}]}  # no text: DS only
    bad = {"attribute": "gender", "teach": {"texts": ["x"], "labels": [], "weights": [1.0]}}
    records = [teach(150), bad, gold, {"attribute": "gender", "votes": {"items": [], "workers": [], "labels": []}}]
    assert [has_student_part(r) for r in records] == [True, True, True, False]
    assert learn_student(student, records, counters) == 151
    assert counters["student_records_skipped"] == 1 and counters["student_gold_applied"] == 1
    assert student.n_learnt == 151 and student.guess("brand3 women's shoe size 41").label == "female"


def test_registry_adopts_newer_students_only_and_reads_the_version_first():
    st = settings()
    reg = StudentRegistry(AttributeSchema.load(None), st)
    seen = []
    reg.on_update = lambda a, summary: seen.append((a, summary["version"]))
    cold = reg.get("gender")
    assert cold.version == 0 and cold.record.min_scored == 10 and cold.record.target == pytest.approx(0.97)
    trained = reg.cold("gender")
    learn_student(trained, [teach(120)])
    data = trained.to_bytes()
    newer = reg.decode_newer("gender", data)
    assert newer is not None and reg.offer("gender", newer) and seen == [("gender", trained.version)]
    assert reg.decode_newer("gender", data) is None  # the same version again: skipped before decoding
    assert reg.decode_newer("gender", b"garbage") is None
    assert reg.decode_newer("no-such-attribute", data) is None
    text = "brand2 men's shoe size 44"
    assert reg.guesses(text, ["gender", "unknown"]) == {"gender": trained.guess(text)}


def test_the_learner_publishes_a_changed_student_at_most_every_publish_seconds():
    reg = StudentRegistry(AttributeSchema.load(None), settings())
    sent = []

    class Producer:
        async def send(self, topic, key, value):
            sent.append((topic, key, value))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    published = []
    learner = StudentLearner(reg, "t.student-model", publish_seconds=5.0, on_publish=lambda a, s: published.append(a))

    async def run():
        assert await learner.learn("gender", [teach(60)]) == 60
        assert await learner.learn("unknown-attribute", [teach(5)]) == 0
        assert len(await learner.publish_due(Producer(), now=100.0)) == 1
        await learner.learn("gender", [teach(60, seed=1)])
        assert await learner.publish_due(Producer(), now=102.0) == []  # too soon: kept dirty
        assert len(await learner.publish_due(Producer(), now=105.0)) == 1
        assert await learner.publish_due(Producer(), now=200.0) == []  # nothing new learnt

    asyncio.run(run())
    assert [(t, k) for t, k, _ in sent] == [("t.student-model", b"gender")] * 2 and published == ["gender"] * 2
    last = AttributeStudent.from_bytes(sent[-1][2])
    assert reg.get("gender").version == last.version == learner.own["gender"].version
    assert reg.get("gender") is not learner.own["gender"]  # decisions never read the student being trained
    text = "brand4 unisex shoe size 33"
    assert reg.get("gender").guess(text) == learner.own["gender"].guess(text)


def test_student_metrics_share_alone_agreement_and_licence():
    m = WorkerMetrics()
    for role in ("alone", "alone", "member", "abstain"):
        m.observe_student("gender", role)
    student = AttributeStudent(["male", "female", "unisex"], min_scored=10, target=0.8)
    for seed in range(6):  # one mini-batch each: the later ones are predicted by a trained student
        learn_student(student, [teach(50, seed)])
    m.update_student_metrics("gender", student.summary())
    text = m.render()[0].decode()
    assert 'llmens_student_decisions_total{attribute="gender",role="alone"} 2.0' in text
    assert 'llmens_student_alone_share{attribute="gender"} 0.5' in text
    assert f'llmens_student_version{{attribute="gender"}} {float(student.version)}' in text
    agreement = student.summary()["agreement"]
    assert f'llmens_student_agreement{{attribute="gender",bucket="all"}} {agreement}' in text
    tau = student.summary()["text"]["threshold"]
    assert tau is not None and f'llmens_student_threshold{{attribute="gender",bucket="text"}} {tau}' in text
    assert 'llmens_student_threshold{attribute="gender",bucket="empty"} -1.0' in text
    assert m.student_roles() == {"gender": {"alone": 2, "member": 1, "abstain": 1}}
