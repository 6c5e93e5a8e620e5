"""Rules of gold feedback and of LLM reloads that need no broker: matching, scoring, validation, applying."""

from __future__ import annotations

import asyncio
import os

import pytest
import yaml

from llmens_core.adaptive import AdaptivePolicy
from llmens_core.events import AttributeFeedback, EventError
from llmens_core.llm.config import EndpointConfig
from llmens_core.schema import AttributeSchema
from streams.feedback import FeedbackRejected, FeedbackScores, canonical_label, match_feedback, score_feedback
from streams.reconfig import LlmReloader, load_llms, validate_llms

SCHEMA = AttributeSchema.load()


def ep(name: str, **kw) -> EndpointConfig:
    return EndpointConfig(name=name, base_url="http://127.0.0.1:1/v1", model=name, **kw)


def test_feedback_event_validation_names_the_field():
    fb = AttributeFeedback.from_bytes(b'{"product_id": "p", "attribute": "gender", "label": "female"}')
    assert fb.version is None and fb.decided_at > 0
    assert AttributeFeedback.from_bytes(b'{"product_id": "p", "attribute": "a", "label": "l", "comment": "ok"}')
    for raw, field in ((b'{"product_id": "p", "attribute": "gender"}', "label"),
                       (b'{"product_id": "p", "attribute": "gender", "label": "x", "version": "2"}', "version"),
                       (b'{"product_id": "", "attribute": "gender", "label": "x"}', "product_id"),
                       (b'{"product_id": "p", "attribute": "gender", "label": 3}', "label")):
        with pytest.raises(EventError, match=field):
            AttributeFeedback.from_bytes(raw)


def test_match_feedback_finds_the_decision_or_says_why_not():
    decision = {"value": "female", "votes": {"a": "female", "b": "male", "c": None}}
    state = {"version": 2, "decisions": {"gender": decision}}

    def fb(**kw):
        return AttributeFeedback(**{"product_id": "p", "attribute": "gender", "label": "male", **kw})

    assert match_feedback(fb(), state, SCHEMA) == ("male", 2, decision)
    assert match_feedback(fb(version=2, label="Male"), state, SCHEMA)[0] == "male"
    assert match_feedback(fb(label="None"), state, SCHEMA)[0] == "none"
    cases = [(fb(), None, "feedback_unknown_product", "unknown product 'p'"),
             (fb(label="purple"), state, "feedback_bad_label", "label: 'purple' is not in the label set"),
             (fb(attribute="bogus"), state, "feedback_unknown_attribute", "unknown attribute 'bogus'"),
             (fb(attribute="material", label="leather"), state, "feedback_unknown_attribute", "no decision for"),
             (fb(version=1), state, "feedback_version", "version: feedback for version 1")]
    for f, st, kind, reason in cases:
        with pytest.raises(FeedbackRejected, match=reason) as err:
            match_feedback(f, st, SCHEMA)
        assert err.value.kind == kind
    assert canonical_label(SCHEMA["gender"], "ultraviolet") is None


def test_scores_count_the_ensemble_and_every_llm():
    out = score_feedback("female", {"a": "female", "b": "male", "c": None}, "female")
    assert out == [("ensemble", "agree"), ("a", "agree"), ("b", "disagree"), ("c", "abstain")]
    scores = FeedbackScores()
    for llm, outcome in out + score_feedback(None, {"a": "male"}, "female"):
        scores.add("gender", llm, outcome)
    d = scores.as_dict()["gender"]
    assert d["ensemble"] == {"agree": 1, "disagree": 0, "abstain": 1, "accuracy": 1.0}
    assert d["a"]["accuracy"] == 0.5


def test_validate_and_load_llms(tmp_path):
    validate_llms([ep("a"), ep("b", fallback="a")])
    for bad, msg in (([ep("a"), ep("a")], "duplicate"), ([ep("a", enabled=False)], "no enabled"),
                     ([ep("a", fallback="zz")], "fallback")):
        with pytest.raises(ValueError, match=msg):
            validate_llms(bad)
    path = tmp_path / "llmens.yaml"
    path.write_text(yaml.safe_dump({"llms": [ep("a").model_dump(mode="json")]}))
    assert [e.name for e in load_llms(path)] == ["a"]
    path.write_text(yaml.safe_dump({"llms": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="base_url"):
        load_llms(path)


def test_reloader_applies_a_changed_list_to_registry_and_policy_and_keeps_it_on_errors(tmp_path, monkeypatch):
    from streams.settings import Settings
    from streams.worker import Worker

    monkeypatch.delenv("LLMENS_CONFIG", raising=False)
    settings = Settings(llms=[ep("a"), ep("b"), ep("c")], data_dir=tmp_path / "data")
    w = Worker(settings)
    model = w.registry.get("gender")
    policy = AdaptivePolicy(settings.llms, first_stage=2)
    path = tmp_path / "llmens.yaml"
    reloader = LlmReloader(path, w, policy)

    def write(raw) -> None:
        path.write_text(yaml.safe_dump(raw))
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))

    async def run():
        write({"llms": [e.model_dump(mode="json") for e in settings.llms]})
        assert await reloader.check() == "unchanged"
        assert await reloader.check() is None  # file not touched since
        write({"llms": "not a list"})
        assert await reloader.check() == "invalid"
        assert [e.name for e in w.settings.llms] == ["a", "b", "c"]
        write({"llms": [ep("a").model_dump(mode="json"), ep("b").model_dump(mode="json"),
                        ep("d").model_dump(mode="json")]})
        assert await reloader.check() == "applied"

    asyncio.run(run())
    assert [e.name for e in w.settings.llms] == ["a", "b", "d"]
    assert w.registry.llms == ["a", "b", "d"] and "d" in model.workers_
    assert sorted(policy.llms) == ["a", "b", "d"]
    assert w.counters["config_reloads"] == 1 and w.counters["config_reload_errors"] == 1
    assert w.counters["llms_added"] == 1 and w.counters["llms_removed"] == 1
    w.metrics.close()
