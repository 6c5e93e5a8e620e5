"""`llmens backfill` publishes decisions to product-attributes, models to ds-model and the requests it gave up on
to dead-letter, as the stream and `llmens fit` do (simulated LLMs on loopback, the session broker)."""

from __future__ import annotations

import asyncio
import threading
from importlib import resources

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from llmens_core.events import AttributeDecision, DeadLetter
from llmens_core.llm.simulator import load_sim_config, start_simulator
from streams.cli import app
from streams.harness.publishing_models import current_versions
from streams.harness.stack import read_topic
from streams.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_url():
    """The built-in simulated models in a thread of their own (no latency; sim-small's batch lines all fail)."""
    cfg = load_sim_config(None).model_dump(mode="json")
    cfg["batch_seconds"] = 0.1
    cfg["defaults"] = {"faults": {"http_429": 0, "http_500": 0, "malformed": 0, "out_of_schema": 0}}
    for m in cfg["models"]:
        m["latency_ms"], m["faults"] = None, ({"http_500": 1.0} if m["name"] == "sim-small" else None)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    async def serve():
        box["runner"], box["port"] = await start_simulator(cfg)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(20)
    yield f"http://127.0.0.1:{box['port']}/v1"
    asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_backfill_publishes_decisions_models_and_dead_letters(tmp_path, broker, topic_prefix, sim_url):
    llms = [{"name": n, "provider": p, "base_url": sim_url, "model": n, "price_in_per_1k": 1.0}
            for n, p in (("sim-large", "openai"), ("sim-careful", "anthropic"), ("sim-small", "openai"))]
    config = tmp_path / "llmens.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": topic_prefix},
                                      "llms": llms}))
    settings = Settings(kafka={"bootstrap": broker.bootstrap, "topic_prefix": topic_prefix}, llms=llms)
    ensure_topics(settings)
    lines = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes().splitlines()[:6]
    catalogue = tmp_path / "products.jsonl"
    catalogue.write_bytes(b"\n".join(lines) + b"\n")
    args = ["backfill", str(catalogue), "--state", str(tmp_path / "state"), "--poll", "0.1", "--max-tries", "2",
            "--quick-fit", "--quiet", "-c", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 products, 18 requests (12 answered, 6 dead)" in result.output

    decisions = [AttributeDecision.from_bytes(m.value()) for m in
                 read_topic(broker.bootstrap, settings.topic("product_attributes"), idle_s=1.0, timeout_s=20)]
    pids = {orjson.loads(x)["product_id"] for x in lines}
    assert {d.product_id for d in decisions} == pids
    assert all(set(d.votes) == {"sim-large", "sim-careful"} and d.value is not None for d in decisions)
    versions = current_versions(broker.bootstrap, settings.topic("ds_model"))
    assert set(versions) == {d.attribute for d in decisions} and set(versions.values()) == {1}
    assert {d.model_version for d in decisions} == {1}
    dead = [DeadLetter.from_bytes(m.value()) for m in
            read_topic(broker.bootstrap, settings.topic("dead_letter"), idle_s=1.0, timeout_s=20)]
    assert len(dead) == 6 and all("llm sim-small: errored: http_500" in d.error for d in dead)
    assert {orjson.loads(d.original)["product_id"] for d in dead} == pids

    again = CliRunner().invoke(app, args)  # a rerun of a finished backfill sends nothing twice
    assert again.exit_code == 0 and "already published" in again.output
