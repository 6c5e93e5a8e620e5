"""The stream with real local models: a model server killed mid-run loses no product.

Broker + one worker asking two real members: the running Qwen2.5-Coder-0.5B llama.cpp server of
``make real-llms`` and a MiniLM embeddings server this test starts on its own port and SIGKILLs after the first
decisions. Every published product must still get a decision for every asked attribute (from the surviving
member), and the killed member's later votes are failures, not labels. Runs under ``make test-real``; skipped
otherwise and where the real servers or models are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from llmens_core.llm.config import load_endpoints
from streams.harness.demo import demo_products
from streams.harness.processes import free_port
from streams.harness.stack import LocalStack

pytestmark = [pytest.mark.real_llm, pytest.mark.integration, pytest.mark.skipif(
    os.environ.get("LLMENS_TEST_REAL") != "1", reason="real-model tests run with `make test-real` (LLMENS_TEST_REAL=1)")]

REPO = Path(__file__).resolve().parents[2]
KILLED = "minilm-killed"


def _real_llms():
    spec = importlib.util.spec_from_file_location("real_llms", REPO / "deploy" / "real-llms" / "real_llms.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def killable_minilm():
    """A private MiniLM /v1/embeddings server: yields (base_url, process)."""
    rl = _real_llms()
    manifest = rl.load_manifest()
    model = next(m for m in manifest["models"] if m["kind"] == "minilm_embeddings")
    py, path = rl.tools_python(manifest), rl.model_path(manifest, model)
    if not py.exists() or not (path / "model.safetensors").exists():
        pytest.skip("MiniLM or the real-llms tools venv is not installed (make real-llms)")
    port = free_port()
    proc = subprocess.Popen([str(py), str(rl.HERE / "minilm_server.py"), "--model-dir", str(path), "--port",
                             str(port), "--name", KILLED], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while not _up(url + "/models"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the MiniLM server did not start")
        time.sleep(0.3)
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_killing_a_model_server_mid_run_loses_no_product(tmp_path, broker, topic_prefix, killable_minilm):
    small = {e.name: e for e in load_endpoints(REPO / "deploy" / "llmens.real.yaml")}["qwen-0.5b"]
    if not _up(small.base_url + "/models"):
        pytest.skip("the qwen-0.5b server of `make real-llms` is not running")
    url, proc = killable_minilm
    settings = tmp_path / "real.yaml"
    settings.write_text(yaml.safe_dump({"concurrency": 4, "product_deadline_s": 300, "llms": [
        small.model_dump(mode="json"),
        {"name": KILLED, "provider": "openai_embeddings", "base_url": url, "model": KILLED, "max_retries": 1,
         "breaker_failures": 3, "breaker_cooldown_s": 20}]}))
    events, _ = demo_products()
    events = events[:10]
    want = {(e["product_id"], e["version"], a) for e in events for a in e["attributes"]}
    with LocalStack(tmp_path / "stack", bootstrap=broker.bootstrap, topic_prefix=topic_prefix,
                    llms_config=settings) as stack:
        stack.publish(events)
        first = stack.read("product_attributes", stop=lambda msgs: len(msgs) >= 2, timeout_s=300)
        assert len(first) >= 2, "no decisions before the kill"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        decisions = stack.decisions(want, timeout_s=900)
    got = {(d["product_id"], d["version"], d["attribute"]) for d in decisions}
    assert want <= got, f"lost {len(want - got)} of {len(want)} attribute values"
    before = [orjson.loads(m.value()) for m in first]
    assert all(d["votes"].get(KILLED) is not None for d in before), "the embedding member voted before the kill"
    # products asked after the kill: the dead member's vote is missing, the survivor's decides
    without = [d for d in decisions if d["votes"].get(KILLED) is None]
    assert without, "the kill did not take effect"
    assert all(d["value"] is not None for d in without)
