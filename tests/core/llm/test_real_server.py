"""Against the real local servers of ``make real-llms`` (llama-cpp-python 0.3.36 with Qwen2.5-Coder-0.5B, the
MiniLM embeddings server): 5 OA-Mine products through the gateway, and the request/response shapes they accept.

Runs under ``make test-real`` (which starts the servers and sets LLMENS_TEST_REAL=1); skipped, with the reason,
otherwise or when the servers are not running, so ``make test`` never waits for a CPU model. The recorded
shapes are replayed without them in test_real_server_shapes.py.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import orjson
import pytest

from llmens_core.events import ProductUpdate
from llmens_core.llm.config import EndpointConfig, load_endpoints
from llmens_core.llm.embeddings import EmbeddingIndex
from llmens_core.llm.gateway import Gateway
from llmens_core.llm.providers import PROVIDERS

pytestmark = [pytest.mark.real_llm, pytest.mark.skipif(
    os.environ.get("LLMENS_TEST_REAL") != "1", reason="real-model tests run with `make test-real` (LLMENS_TEST_REAL=1)")]

CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "llmens.real.yaml"
ENDPOINTS = {e.name: e for e in load_endpoints(CONFIG)}
SMALL, EMBED = ENDPOINTS["qwen-0.5b"], ENDPOINTS["minilm"]


def _up(ep: EndpointConfig) -> bool:
    try:
        with urllib.request.urlopen(ep.base_url.rstrip("/") + "/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def servers():
    down = [ep.name for ep in (SMALL, EMBED) if not _up(ep)]
    if down:
        pytest.skip(f"real model servers not running ({', '.join(down)} at {CONFIG.name}): start them with "
                    "`make real-llms` (or run `make test-real`)")


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _products(demo_products: list[dict], n: int) -> list[ProductUpdate]:
    return [ProductUpdate(product_id=r["product_id"], version=1, title=r["title"], category=r.get("category"),
                          attributes=sorted(r["attributes"])) for r in demo_products[:n]]


async def test_five_products_through_the_gateway_give_labels_from_the_label_sets(schema, demo_products):
    PROVIDERS["openai_embeddings"].index = EmbeddingIndex()
    async with Gateway([SMALL, EMBED], schema, product_deadline_s=300) as gw:
        votes = [v for p in _products(demo_products, 5) for v in await gw.label(p, p.attributes)]
        counters = gw.counters()
    assert len(votes) == 2 * sum(len(r["attributes"]) for r in demo_products[:5])
    assert all(v.error is None for v in votes), [v.error for v in votes if v.error]
    assert all(v.label in schema[v.attribute].classes for v in votes if v.label is not None)
    generated = [v for v in votes if v.llm == SMALL.name]
    assert sum(v.label is not None for v in generated) >= len(generated) - 1  # the grammar keeps it in the set
    assert all(v.confidence is not None and 0 < v.confidence <= 1 for v in generated)
    assert counters[SMALL.name].usage_estimated == 0 and counters[SMALL.name].tokens_in > 0


def test_chat_shapes_llama_cpp_python_accepts_and_returns(schema):
    """json_object + schema and logprobs are accepted; json_schema is refused with a 500 validation error."""
    attrs = [schema["gender"]]
    schema_json = {"type": "object", "properties": {"gender": {"type": "string", "enum": list(attrs[0].classes)}},
                   "required": ["gender"], "additionalProperties": False}
    base = {"model": SMALL.model, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Label the gender of: Crocs Women's Jayna Ballet Flat"}]}
    url = SMALL.base_url + "/chat/completions"
    status, data = _post(url, {**base, "logprobs": True, "top_logprobs": 1,
                               "response_format": {"type": "json_object", "schema": schema_json}})
    assert status == 200
    content = data["choices"][0]["message"]["content"]
    assert orjson.loads(content)["gender"] in attrs[0].classes
    tokens = data["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == content and all(t["logprob"] <= 0 for t in tokens)
    assert set(data["usage"]) >= {"prompt_tokens", "completion_tokens"}
    status, data = _post(url, {**base, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema_json}}})
    assert status == 500 and "Input should be 'text' or 'json_object'" in data["error"]["message"]


def test_embeddings_shape():
    status, data = _post(EMBED.base_url + "/embeddings", {"model": EMBED.model, "input": ["red shoes", "a cup"]})
    assert status == 200 and [d["index"] for d in data["data"]] == [0, 1]
    assert len(data["data"][0]["embedding"]) == 384 and data["usage"]["prompt_tokens"] > 0
