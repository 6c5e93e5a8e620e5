"""What the gateway sends to and reads from OpenAI, Anthropic and Gemini, with their official SDKs as the oracle.

Requests are captured by a real aiohttp server on loopback and checked against the SDKs' own request types
(unknown keys are errors); responses are built with the SDKs' own response models, so that a field the
gateway reads is one the provider really sends.
"""

from __future__ import annotations

import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from sdk_oracle import Reply, request_errors, start_recorder

from llmens_core.events import ProductUpdate
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.gateway import Gateway
from llmens_core.llm.retry_hints import retry_hints

PRODUCT = ProductUpdate(product_id="p1", version=1, title="Ellie Shoes Women's 8400, Red Patent, 14 M US")
ATTRS = ["gender", "color_family"]
QUICK = dict(timeout_s=5.0, max_retries=2, backoff_base_s=0.001, backoff_cap_s=0.002, breaker_failures=2,
             breaker_cooldown_s=60.0, price_in_per_1k=1.0, price_out_per_1k=2.0)


@pytest.fixture
async def rec():
    runner, recording = await start_recorder()
    yield recording
    await runner.cleanup()


async def ask(ep: EndpointConfig, schema, product: ProductUpdate = PRODUCT):
    async with Gateway([ep], schema) as gw:
        votes = await gw.label(product, ATTRS)
        return votes, gw.counters()[ep.name], gw._clients[ep.name].breaker.state


class GeminiGenerateContentRequest(BaseModel):
    """The REST body of ``models/{model}:generateContent``, made of the SDK's own REST-level types."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
    contents: list[gtypes.Content]
    system_instruction: gtypes.Content | None = None
    generation_config: gtypes.GenerationConfig | None = None
    safety_settings: list[gtypes.SafetySetting] | None = None


# -- responses built with the SDKs' models -------------------------------------------------------------------

def openai_reply(content: str | None, finish: str = "stop", refusal: str | None = None,
                 usage: tuple[int, int] = (100, 20)) -> dict:
    return ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }).model_dump(mode="json", exclude_none=True)


def anthropic_reply(content: list[dict], stop: str, usage: tuple[int, int] = (100, 20)) -> dict:
    return AnthropicMessage.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": content,
        "stop_reason": stop, "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }).model_dump(mode="json", exclude_none=True)


def gemini_reply(parts: list[gtypes.Part] | None, finish: str | None = "STOP", block: str | None = None,
                 usage: tuple[int, int, int | None] = (100, 22, None)) -> dict:
    candidates = None
    if finish is not None:
        content = gtypes.Content(role="model", parts=parts) if parts is not None else None
        candidates = [gtypes.Candidate(content=content, finish_reason=gtypes.FinishReason(finish), index=0)]
    return gtypes.GenerateContentResponse(
        candidates=candidates,
        prompt_feedback=gtypes.GenerateContentResponsePromptFeedback(block_reason=gtypes.BlockedReason(block))
        if block else None,
        usage_metadata=gtypes.GenerateContentResponseUsageMetadata(
            prompt_token_count=usage[0], candidates_token_count=usage[1], thoughts_token_count=usage[2]),
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


ANSWER = '{"gender": "female", "color_family": "red"}'


def openai_ep(rec, **kw) -> EndpointConfig:
    return EndpointConfig(**{"name": "gpt", "provider": "openai", "base_url": rec.base_url + "/v1",
                             "model": "gpt-4o-mini", **QUICK, **kw})


def anthropic_ep(rec, **kw) -> EndpointConfig:
    return EndpointConfig(**{"name": "claude", "provider": "anthropic", "base_url": rec.base_url + "/v1",
                             "model": "claude-haiku-4-5", **QUICK, **kw})


def gemini_ep(rec, **kw) -> EndpointConfig:
    return EndpointConfig(**{"name": "gemini", "provider": "gemini", "base_url": rec.base_url + "/v1beta",
                             "model": "gemini-2.5-flash", **QUICK, **kw})


# -- request bodies -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["default", "ecinstruct"])
@pytest.mark.parametrize("knobs", [{}, {"seed": 7, "service_tier": "flex", "token_limit_field": "max_completion_tokens",
                                        "top_p": 0.9, "logprobs": True}])
async def test_openai_body_fits_the_sdks_request_type(rec, schema, prompt, knobs):
    rec.reply(Reply(body=openai_reply(ANSWER)))
    votes, _, _ = await ask(openai_ep(rec, prompt=prompt, **knobs), schema)
    body = rec.bodies[0]
    assert request_errors(body, CompletionCreateParamsNonStreaming) == []
    for k, v in knobs.items():
        if k == "token_limit_field":
            assert body[v] == 512 and "max_tokens" not in body
        elif k != "logprobs":
            assert body[k] == v
    assert all(v.error is None for v in votes)


@pytest.mark.parametrize(("style", "extension"), [("vllm", "structured_outputs"), ("guided_json", "guided_json"),
                                                  ("json_object", "response_format")])
async def test_openai_compatible_styles_differ_from_the_sdk_only_by_their_extension(rec, schema, style, extension):
    rec.reply(Reply(body=openai_reply(ANSWER)))
    await ask(openai_ep(rec, structured_style=style), schema)
    body = dict(rec.bodies[0])
    errors = request_errors(body, CompletionCreateParamsNonStreaming)
    assert errors and all(e.startswith(f"body.{extension}") for e in errors), errors
    body.pop(extension)
    assert request_errors(body, CompletionCreateParamsNonStreaming) == []


@pytest.mark.parametrize("structured", [True, False])
async def test_anthropic_body_fits_the_sdks_request_type(rec, schema, structured):
    """Today's SDK has no ``temperature`` in MessageCreateParams; structured output is ``output_config.format``."""
    rec.reply(Reply(body=anthropic_reply([{"type": "text", "text": ANSWER}], "end_turn")))
    votes, _, _ = await ask(anthropic_ep(rec, structured_output=structured), schema)
    body = rec.bodies[0]
    assert request_errors(body, MessageCreateParamsNonStreaming) == []
    if structured:
        fmt = body["output_config"]["format"]
        assert fmt["type"] == "json_schema"
        assert fmt["schema"]["properties"]["gender"]["enum"] == [*schema["gender"].labels, "none"]
    else:
        assert "output_config" not in body
    assert [v.label for v in votes] == ["female", "red"]


def test_the_oracle_refuses_what_the_sdk_does_not_declare():
    body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    assert request_errors(body, MessageCreateParamsNonStreaming) == []
    assert request_errors({**body, "temperature": 0.0}, MessageCreateParamsNonStreaming) == \
        ["body.temperature: unknown key"]
    assert request_errors({**body, "messages": [{"role": "user", "content": "x", "name": "a"}]},
                          MessageCreateParamsNonStreaming) == ["body.messages[0].name: unknown key"]
    assert request_errors({"model": "m", "messages": [{"role": "robot", "content": "x"}]},
                          CompletionCreateParamsNonStreaming)


@pytest.mark.parametrize("knobs", [{}, {"thinking_budget": 0, "seed": 3, "top_p": 0.5, "top_k": 20,
                                        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                                             "threshold": "BLOCK_ONLY_HIGH"}]}])
async def test_gemini_body_fits_the_sdks_types(rec, schema, knobs):
    rec.reply(Reply(body=gemini_reply([gtypes.Part(text=ANSWER)])))
    await ask(gemini_ep(rec, **knobs), schema)
    req = GeminiGenerateContentRequest.model_validate(rec.bodies[0])
    gen = req.generation_config
    assert gen.response_mime_type == "application/json" and gen.response_schema.properties["gender"].enum
    if knobs:
        assert gen.thinking_config.thinking_budget == 0 and gen.seed == 3 and gen.top_k == 20
        assert req.safety_settings[0].threshold == gtypes.HarmBlockThreshold.BLOCK_ONLY_HIGH
    with pytest.raises(ValidationError):
        GeminiGenerateContentRequest.model_validate({**rec.bodies[0], "temperature": 0})


@pytest.mark.parametrize(("provider", "base", "path"), [
    ("anthropic", "", "/v1/messages"), ("anthropic", "/v1", "/v1/messages"), ("anthropic", "/v1/", "/v1/messages"),
    ("gemini", "", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("gemini", "/v1beta", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("gemini", "/v1", "/v1/models/gemini-2.5-flash:generateContent"),
    ("openai", "", "/v1/chat/completions"), ("openai", "/v1", "/v1/chat/completions"),
    ("openai", "/v1beta/openai/", "/v1beta/openai/chat/completions"),
])
async def test_base_urls_with_or_without_the_version_segment(rec, schema, provider, base, path):
    make = {"anthropic": anthropic_ep, "gemini": gemini_ep, "openai": openai_ep}[provider]
    rec.reply(Reply(404, {"error": {"message": "not here"}}))
    await ask(make(rec, base_url=rec.base_url + base, max_retries=0), schema)
    assert rec.requests[0][0] == path


# -- finish reasons ---------------------------------------------------------------------------------------------

REFUSED = [
    ("openai", lambda: openai_reply(None, refusal="I can't help with that."), "refusal"),
    ("openai", lambda: openai_reply("", finish="content_filter"), "safety"),
    ("anthropic", lambda: anthropic_reply([], "refusal"), "refusal"),
    ("gemini", lambda: gemini_reply(None, finish="SAFETY"), "safety"),
    ("gemini", lambda: gemini_reply(None, finish=None, block="PROHIBITED_CONTENT", usage=(100, 0, None)), "safety"),
]


@pytest.mark.parametrize(("provider", "reply", "reason"), REFUSED)
async def test_a_refusal_is_one_billed_request_that_abstains(rec, schema, provider, reply, reason):
    make = {"anthropic": anthropic_ep, "gemini": gemini_ep, "openai": openai_ep}[provider]
    body = reply()
    rec.reply(Reply(body=body))
    votes, k, state = await ask(make(rec), schema)
    assert len(rec.requests) == 1, "a refusal is final: not retried"
    assert [(v.label, v.error, v.raw) for v in votes] == [(None, None, f"declined:{reason}")] * 2
    assert k.declined == {reason: 1} and k.errors == {} and k.failures == 0 and k.successes == 1
    tokens_out = 0 if "promptFeedback" in body else 20 if provider != "gemini" else 22
    assert (k.tokens_in, k.tokens_out, k.usage_estimated) == (100, tokens_out, 0)
    assert k.cost_usd == pytest.approx(0.1 + tokens_out * 0.002)
    assert sum(v.cost_usd for v in votes) == pytest.approx(k.cost_usd)
    assert state == "closed"


async def test_refusals_never_open_the_breaker(rec, schema):
    """Two blocked products once opened the breaker (breaker_failures=2): the next good product then failed."""
    ep = openai_ep(rec)
    async with Gateway([ep], schema) as gw:
        for _ in range(3):
            rec.reply(Reply(body=openai_reply(None, refusal="no")))
            await gw.label(PRODUCT, ATTRS)
        rec.reply(Reply(body=openai_reply(ANSWER)))
        votes = await gw.label(PRODUCT, ATTRS)
        k = gw.counters()["gpt"]
    assert [v.label for v in votes] == ["female", "red"]
    assert k.breaker_opens == 0 and k.requests == 4 and k.declined == {"refusal": 3}


CUT = [
    ("openai", lambda: openai_reply('{"gender": "fem', finish="length")),
    ("anthropic", lambda: anthropic_reply([{"type": "text", "text": '{"gender": "fem'}], "max_tokens")),
    ("gemini", lambda: gemini_reply(None, finish="MAX_TOKENS", usage=(100, 22, 490))),
]


@pytest.mark.parametrize(("provider", "reply"), CUT)
async def test_a_cut_off_answer_abstains_without_a_retry_budget(rec, schema, provider, reply):
    make = {"anthropic": anthropic_ep, "gemini": gemini_ep, "openai": openai_ep}[provider]
    rec.reply(Reply(body=reply()))
    votes, k, state = await ask(make(rec), schema)
    assert len(rec.requests) == 1
    assert [(v.label, v.error, v.raw) for v in votes] == [(None, None, "declined:length")] * 2
    assert k.declined == {"length": 1} and k.errors == {} and state == "closed"
    assert k.tokens_out == (512 if provider == "gemini" else 20)


@pytest.mark.parametrize(("provider", "reply"), CUT)
async def test_a_cut_off_answer_is_asked_once_more_with_the_larger_budget(rec, schema, provider, reply):
    make = {"anthropic": anthropic_ep, "gemini": gemini_ep, "openai": openai_ep}[provider]
    good = {"openai": lambda: openai_reply(ANSWER),
            "anthropic": lambda: anthropic_reply([{"type": "text", "text": ANSWER}], "end_turn"),
            "gemini": lambda: gemini_reply([gtypes.Part(text=ANSWER)])}[provider]
    rec.reply(Reply(body=reply()), Reply(body=good()))
    votes, k, _ = await ask(make(rec, length_retry_max_output_tokens=2048), schema)
    assert [v.label for v in votes] == ["female", "red"]
    budgets = [b.get("max_tokens") or b.get("generationConfig", {}).get("maxOutputTokens") for b in rec.bodies]
    assert budgets == [512, 2048]
    assert k.declined == {"length": 1} and k.retries == 0

    rec.reply(Reply(body=reply()))  # cut again with the larger budget: abstains, no third request
    votes, k, _ = await ask(make(rec, length_retry_max_output_tokens=2048), schema)
    assert len(rec.requests) == 2 and votes[0].raw == "declined:length"


async def test_gemini_thinking_tokens_are_output_and_thoughts_are_not_the_answer(rec, schema):
    parts = [gtypes.Part(text="Let me think about shoes...", thought=True), gtypes.Part(text=ANSWER)]
    rec.reply(Reply(body=gemini_reply(parts, usage=(250, 22, 611))))
    votes, k, _ = await ask(gemini_ep(rec), schema)
    assert [v.label for v in votes] == ["female", "red"]
    assert (k.tokens_in, k.tokens_out) == (250, 633)
    assert k.cost_usd == pytest.approx(0.25 + 633 * 0.002)


async def test_anthropic_thinking_and_tool_blocks_are_not_the_answer(rec, schema):
    content = [{"type": "thinking", "thinking": "red patent: red", "signature": "sig"},
               {"type": "text", "text": ANSWER},
               {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]
    rec.reply(Reply(body=anthropic_reply(content, "end_turn", usage=(300, 90))))
    votes, k, _ = await ask(anthropic_ep(rec), schema)
    assert [v.label for v in votes] == ["female", "red"]
    assert (k.tokens_in, k.tokens_out) == (300, 90)


# -- retry hints ----------------------------------------------------------------------------------------------

async def test_openai_retry_after_ms_is_honoured(rec, schema):
    err = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    rec.reply(Reply(429, err, {"retry-after-ms": "250", "retry-after": "1"}), Reply(body=openai_reply(ANSWER)))
    votes, k, _ = await ask(openai_ep(rec), schema)
    assert [v.label for v in votes] == ["female", "red"]
    assert k.retry_after_waits == 1 and k.retry_after_wait_s == pytest.approx(0.25)


async def test_x_should_retry_false_is_final(rec, schema):
    rec.reply(Reply(503, {"error": {"message": "overloaded"}}, {"x-should-retry": "false"}),
              Reply(body=openai_reply(ANSWER)))
    votes, k, _ = await ask(openai_ep(rec), schema)
    assert len(rec.requests) == 1
    assert votes[0].error.startswith("http_503") and k.retries == 0


async def test_x_should_retry_true_retries_a_status_we_would_not(rec, schema):
    rec.reply(Reply(404, {"error": {"message": "try again"}}, {"x-should-retry": "true"}),
              Reply(body=anthropic_reply([{"type": "text", "text": ANSWER}], "end_turn")))
    votes, k, _ = await ask(anthropic_ep(rec), schema)
    assert len(rec.requests) == 2 and votes[0].label == "female"


GEMINI_429 = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "x"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}]}}


async def test_gemini_retry_info_in_a_429_body_is_honoured(rec, schema):
    sdk_view = genai_errors.APIError(429, GEMINI_429)  # the SDK reads this body as an error with details
    assert sdk_view.status == "RESOURCE_EXHAUSTED" and sdk_view.details == GEMINI_429
    rec.reply(Reply(429, GEMINI_429), Reply(body=gemini_reply([gtypes.Part(text=ANSWER)])))
    votes, k, _ = await ask(gemini_ep(rec), schema)
    assert votes[0].label == "female"
    assert k.retry_after_waits == 1 and k.retry_after_wait_s == pytest.approx(0.3)


# -- configuration ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "knob"), [
    ("anthropic", {"temperature": 0.7}), ("anthropic", {"seed": 1}), ("anthropic", {"top_p": 0.9}),
    ("gemini", {"service_tier": "flex"}), ("openai", {"thinking_budget": 0}), ("openai", {"top_k": 5}),
    ("gemini", {"token_limit_field": "max_completion_tokens"}),
    ("openai", {"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]}),
])
def test_a_knob_the_provider_has_not_is_refused_by_name(provider, knob):
    with pytest.raises(ValidationError, match=next(iter(knob))):
        EndpointConfig(name="x", provider=provider, base_url="https://example.com/v1", model="m", **knob)


def test_length_retry_budget_must_be_larger():
    with pytest.raises(ValidationError, match="length_retry_max_output_tokens"):
        EndpointConfig(name="x", base_url="https://example.com/v1", model="m", max_output_tokens=512,
                       length_retry_max_output_tokens=512)


async def test_embeddings_body_fits_the_sdks_request_type_and_response(rec, schema):
    from openai.types import CreateEmbeddingResponse
    from openai.types.embedding_create_params import EmbeddingCreateParams

    ep = EndpointConfig(name="emb", provider="openai_embeddings", base_url=rec.base_url, model="minilm", **QUICK)

    def reply_for(n: int) -> dict:
        return CreateEmbeddingResponse.model_validate({
            "object": "list", "model": "minilm", "usage": {"prompt_tokens": 40, "total_tokens": 40},
            "data": [{"object": "embedding", "index": i, "embedding": [1.0 if j == i % 4 else 0.0 for j in range(4)]}
                     for i in range(n)]}).model_dump(mode="json")

    rec.reply(Reply(body=lambda request: reply_for(len(request["input"]))))
    votes, k, _ = await ask(ep, schema)
    path, _, body = rec.requests[0]
    assert path == "/v1/embeddings"  # a base URL with no path gets /v1
    assert request_errors(body, EmbeddingCreateParams) == []
    assert len(body["input"]) > 1  # the product, then the label descriptions not embedded yet
    assert k.tokens_in == 40 and all(v.error is None for v in votes)


def test_the_simulators_declined_answers_are_what_the_openai_sdk_reads():
    """The simulator's refusal, content-filter and cut-off responses parse as the SDK's ChatCompletion."""
    from llmens_core.llm.simulator import SimReply, Simulator

    for message, finish in [({"role": "assistant", "content": None, "refusal": "no"}, "stop"),
                            ({"role": "assistant", "content": ""}, "content_filter"),
                            ({"role": "assistant", "content": '{"gen'}, "length")]:
        parsed = ChatCompletion.model_validate(Simulator.completion("m", SimReply(0, "prompt text", message, finish)))
        assert parsed.choices[0].finish_reason == finish and parsed.usage.prompt_tokens > 0


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["retry-after-ms", "Retry-After", "x-should-retry"]), st.text(max_size=20)),
       st.binary(max_size=300) | st.builds(lambda d: orjson.dumps({"error": {"details": [
           {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d}]}}), st.text(max_size=12)))
def test_retry_hints_never_raise_and_stay_bounded(headers, raw):
    delay, should_retry = retry_hints(CIMultiDict(headers), raw)
    assert delay is None or 0.0 <= delay <= 600.0
    assert should_retry in (None, True, False)


def test_retry_hints_read_each_form():
    assert retry_hints(CIMultiDict({"retry-after-ms": "1500", "Retry-After": "9"}), b"") == (1.5, None)
    assert retry_hints(CIMultiDict({"retry-after": "2", "X-Should-Retry": "False"}), b"") == (2.0, False)
    assert retry_hints(CIMultiDict(), orjson.dumps(GEMINI_429)) == (0.3, None)
    assert retry_hints(CIMultiDict({"x-should-retry": "maybe"}), b"{}") == (None, None)


def test_each_endpoint_logs_the_exact_url_it_will_call(schema, caplog):
    caplog.set_level("INFO", logger="llmens.llm")
    ep = EndpointConfig(name="claude", provider="anthropic", base_url="https://api.anthropic.com",
                        model="claude-haiku-4-5")
    Gateway([ep], schema)
    assert "llm claude: anthropic API at https://api.anthropic.com/v1/messages (model claude-haiku-4-5)" in caplog.text
