"""Request and response shapes recorded from a real llama-cpp-python 0.3.36 server (Qwen2.5-Coder-1.5B Q4_K_M),
replayed by a loopback HTTP server: what the gateway sends it and how it reads what comes back.

Recorded on 2026-12-03 with ``deploy/real-llms`` (the live version of these checks is test_real_server.py):
* ``response_format: {"type": "json_schema", ...}`` -> HTTP **500** with a pydantic validation error;
* ``response_format: {"type": "json_object", "schema": ...}`` -> 200, content constrained to the schema;
* ``logprobs: true, top_logprobs: 1`` -> ``choices[0].logprobs.content`` tokens that concatenate to the content.
"""

from __future__ import annotations

import math

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from llmens_core.events import ProductUpdate
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.gateway import Gateway
from llmens_core.llm.logprobs import label_confidences
from llmens_core.llm.rejections import rejection_message

JSON_SCHEMA_REJECTED = (
    b'{"error":{"message":"1 validation error:\\n  {\'type\': \'literal_error\', \'loc\': (\'body\', '
    b'\'response_format\', \'type\'), \'msg\': \\"Input should be \'text\' or \'json_object\'\\", \'input\': '
    b'\'json_schema\', \'ctx\': {\'expected\': \\"\'text\' or \'json_object\'\\"}}\\n\\n  File \\"/root/.cache/'
    b'llmens/real-llms/tools-venv/lib/python3.11/site-packages/llama_cpp/server/app.py\\", line 376, in '
    b'create_chat_completion\\n    POST /v1/chat/completions","type":"internal_server_error","param":null,'
    b'"code":null}}')

TOKENS = [("{\"", -4.4396), ("gender", -0.0323), ("\":", -0.2436), (" \"", -0.0013), ("female", -1.2024),
          ("\",", -0.0146), (" \"", -0.0006), ("color", -0.0004), ("_family", -0.0014), ("\":", -0.0016),
          (" \"", -0.0002), ("red", -0.1054), ("\"}", -0.0101)]
CONTENT = "".join(t for t, _ in TOKENS)
CHAT_OK = {
    "id": "chatcmpl-4f741001", "object": "chat.completion", "created": 1796292926, "model": "qwen-1.5b",
    "choices": [{"index": 0, "message": {"content": CONTENT, "role": "assistant"},
                 "logprobs": {"content": [{"token": t, "logprob": lp, "bytes": None,
                                           "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}]}
                                          for t, lp in TOKENS]},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 256, "completion_tokens": 13, "total_tokens": 269},
}


@pytest.fixture
async def llama_like():
    """A loopback server answering as llama-cpp-python did; yields (base_url, received bodies)."""
    seen: list[dict] = []

    async def chat(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append(body)
        if body.get("response_format", {}).get("type") == "json_schema":
            return web.Response(status=500, body=JSON_SCHEMA_REJECTED, content_type="application/json")
        return web.json_response(CHAT_OK)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1", seen
    await runner.cleanup()


PRODUCT = ProductUpdate(product_id="oamine-train-0000", version=1, title="Ellie Shoes Women's 8400, Red Patent, 14 M US",
                        attributes=["gender", "color_family"])


async def test_json_object_schema_and_logprobs_give_labels_with_confidences(llama_like, schema):
    url, seen = llama_like
    ep = EndpointConfig(name="qwen", base_url=url, model="qwen-1.5b", structured_style="json_object", logprobs=True)
    async with Gateway([ep], schema) as gw:
        votes = {v.attribute: v for v in await gw.label(PRODUCT, ["gender", "color_family"])}
    sent = seen[0]
    assert sent["response_format"]["type"] == "json_object"
    assert sent["response_format"]["schema"]["properties"]["gender"]["enum"] == [*schema["gender"].labels, "none"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1
    assert votes["gender"].label == "female" and votes["color_family"].label == "red"
    assert votes["gender"].confidence == pytest.approx(math.exp(-1.2024))
    assert votes["color_family"].confidence == pytest.approx(math.exp(-0.1054))


async def test_a_refused_request_shape_fails_at_once_with_the_servers_words(llama_like, schema, caplog):
    url, seen = llama_like
    ep = EndpointConfig(name="qwen", base_url=url, model="qwen-1.5b", max_retries=3)  # json_schema: refused
    async with Gateway([ep], schema) as gw:
        votes = await gw.label(PRODUCT, ["gender"])
        counters = gw.counters()["qwen"]
    assert len(seen) == 1, "a refused shape is not retried"
    assert votes[0].label is None and votes[0].error.startswith("rejected_request")
    assert counters.errors == {"rejected_request": 1}
    assert "Input should be 'text' or 'json_object'" in counters.rejection
    assert "structured_style: json_object" in counters.rejection
    assert any("rejected the request shape (HTTP 500)" in r.getMessage() for r in caplog.records)


def test_rejection_message_tells_refusals_from_failures():
    assert rejection_message(500, b'{"error": {"message": "simulated server error"}}') is None
    assert rejection_message(503, b'{"error": {"message": "Input should be text"}}') is None
    assert rejection_message(400, b'{"error": {"message": "Unrecognized request argument: guided_json"}}') == \
        "Unrecognized request argument: guided_json"
    assert rejection_message(422, b'{"detail": [{"loc": ["body", "logprobs"]}]}').endswith("set `logprobs: false`)")
    assert rejection_message(400, b"not json") == "not json"


@given(st.integers(100, 599), st.binary(max_size=400))
def test_rejection_message_never_raises_and_stays_short(status, raw):
    msg = rejection_message(status, raw)
    assert msg is None or len(msg) < 400


def test_confidences_need_tokens_that_spell_the_content():
    assert label_confidences(CHAT_OK, CONTENT, ["gender"]) == {"gender": pytest.approx(math.exp(-1.2024))}
    assert label_confidences(CHAT_OK, CONTENT + " ", ["gender"]) is None
    assert label_confidences({"choices": [{"message": {}}]}, CONTENT, ["gender"]) is None
    assert label_confidences(CHAT_OK, CONTENT, ["material"]) == {}


@given(st.lists(st.tuples(st.text(max_size=6), st.floats(-50, 0)), min_size=1, max_size=30), st.lists(st.sampled_from(
    ["gender", "color_family", "a"]), max_size=3))
def test_confidences_are_probabilities(tokens, attrs):
    text = "".join(t for t, _ in tokens)
    data = {"choices": [{"logprobs": {"content": [{"token": t, "logprob": lp} for t, lp in tokens]}}]}
    out = label_confidences(data, text, attrs)
    assert out is not None and all(0.0 <= p <= 1.0 for p in out.values())
