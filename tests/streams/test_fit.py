"""`llmens fit` on recorded votes publishes models that a worker adopts as its cold start."""

from __future__ import annotations

import random

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.harness.publishing_models import current_versions
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _votes(path, n=300, seed=0):
    rng = random.Random(seed)
    skill = {"good": 0.95, "ok": 0.75, "bad": 0.4}
    labels = ["male", "female", "unisex"]
    with open(path, "wb") as f:
        for i in range(n):
            truth = rng.choice(labels)
            for llm, p in skill.items():
                label = truth if rng.random() < p else rng.choice([x for x in labels if x != truth])
                f.write(orjson.dumps({"product_id": f"p{i}", "version": 1, "attribute": "gender", "llm": llm,
                                      "label": label}) + b"\n")


def test_fit_publishes_models_above_current_versions(tmp_path, broker, topic_prefix, monkeypatch):
    votes = tmp_path / "votes.jsonl"
    _votes(votes)
    monkeypatch.setenv("LLMENS_KAFKA__TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("LLMENS_KAFKA__BOOTSTRAP", broker.bootstrap)
    from streams.topics import ensure_topics

    settings = Settings()
    ensure_topics(settings)
    runner = CliRunner()
    first = runner.invoke(app, ["fit", str(votes)])
    assert first.exit_code == 0, first.output
    assert "gender" in first.output and "good 0.9" in first.output
    topic = settings.topic("ds_model")
    assert current_versions(broker.bootstrap, topic) == {"gender": 1}
    second = runner.invoke(app, ["fit", str(votes)])
    assert second.exit_code == 0, second.output
    assert current_versions(broker.bootstrap, topic) == {"gender": 2}


def test_fit_rejects_a_file_that_is_not_votes(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"product_id": "p1"}\n')
    result = CliRunner().invoke(app, ["fit", str(bad), "--dry-run"])
    assert result.exit_code != 0
    assert "bad.jsonl:1: not a LabelVote" in str(result.exception) + result.output
