"""Request building and response/usage extraction for each provider API.

* ``openai``: chat completions (OpenAI, vLLM, Ollama ``/v1``, llama.cpp server, TGI, the simulator),
  with structured output as ``response_format`` json_schema (enum per attribute), vLLM
  ``structured_outputs`` or the older vLLM ``guided_json``.
* ``anthropic``: Messages API, with structured output as ``output_config.format`` json_schema.
* ``gemini``: ``models/{model}:generateContent`` with ``responseSchema``.

The request fields and response shapes are checked against the providers' official SDKs (openai 3.63,
anthropic 2.17, google-genai 3.6) in tests/core/llm/test_provider_oracles.py. Each response also says why
the model stopped (:data:`Extracted.finish`): a refusal or safety block (``refusal``, ``safety``) is a final
answer that abstains, a cut-off (``length``) may be asked again with a larger budget (see the client).

Base URLs are taken with or without the API's version segment (``https://api.anthropic.com`` and
``https://api.anthropic.com/v1`` both call ``/v1/messages``; Gemini's default is ``/v1beta``; an OpenAI-style
URL with no path gets ``/v1``).
* ``openai_embeddings``: ``/v1/embeddings``; the answer is computed here by cosine similarity to label
  descriptions (:mod:`llmens_core.llm.embeddings`).

llama.cpp servers differ: ``llama-server`` (C++) takes ``response_format`` json_schema; llama-cpp-python's
server rejects it (HTTP 500, "Input should be 'text' or 'json_object'") and takes ``{"type": "json_object",
"schema": ...}`` instead (``structured_style: json_object``); both turn the schema into a grammar.

One request per product per LLM asks for all requested attributes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.embeddings import EmbeddingIndex, request_inputs, response_vectors
from llmens_core.llm.logprobs import label_confidences
from llmens_core.llm.prompts import Prompt

__all__ = ["DECLINED", "PROVIDERS", "Extracted", "Provider", "ProviderResponseError", "estimate_tokens"]

DECLINED = ("refusal", "safety", "length")
"""Why a response has no answer to parse: the model refused, a safety filter blocked it, or it was cut off."""


class ProviderResponseError(ValueError):
    """A 2xx response whose body does not have the provider's shape."""


def estimate_tokens(chars: int) -> int:
    return max(1, chars // 4)


class Extracted(NamedTuple):
    """What one successful response gave: answer text, usage (``None`` when absent), per-attribute confidence."""

    text: str
    tokens_in: int | None
    tokens_out: int | None
    confidence: dict[str, float] | None = None
    finish: str | None = None
    """One of :data:`DECLINED` when the response is a refusal, a safety block or a cut-off; else ``None``."""


class Provider:
    name = "base"

    def url(self, ep: EndpointConfig) -> str:
        raise NotImplementedError

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        raise NotImplementedError

    def body_bytes(self, ep: EndpointConfig, prompt: Prompt) -> bytes:
        """:meth:`body` encoded as JSON (what is sent)."""
        return orjson.dumps(self.body(ep, prompt))

    def extract(self, data: Any) -> Extracted:
        """Answer text, input and output tokens (``None`` when the response has no usage), finish reason."""
        raise NotImplementedError

    def extract_for(self, ep: EndpointConfig, prompt: Prompt, body: bytes, data: Any) -> Extracted:
        """:meth:`extract` with the request at hand (providers whose answer depends on what was asked)."""
        return self.extract(data)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _versioned(base_url: str, segments: tuple[str, ...], default: str) -> str:
    """``base_url`` without a trailing slash, with ``default`` appended unless it already ends in one of
    ``segments`` (the API's version path)."""
    base = base_url.rstrip("/")
    return base if base.rsplit("/", 1)[-1] in segments else f"{base}/{default}"


_SCHEMA_JSON: dict[int, tuple[Any, orjson.Fragment]] = {}


def _schema_fragment(schema: dict[str, Any]) -> orjson.Fragment:
    """The JSON encoding of a (cached, shared) prompt schema, encoded once per schema object."""
    hit = _SCHEMA_JSON.get(id(schema))
    if hit is None or hit[0] is not schema:
        if len(_SCHEMA_JSON) >= 4096:
            _SCHEMA_JSON.clear()
        hit = _SCHEMA_JSON[id(schema)] = (schema, orjson.Fragment(orjson.dumps(schema)))  # keeps schema alive
    return hit[1]


_OPENAI_FINISH = {"length": "length", "content_filter": "safety"}


def _openai_base(base_url: str) -> str:
    """An OpenAI-style base URL; one with no path at all gets ``/v1`` (compatible servers put it elsewhere)."""
    base = base_url.rstrip("/")
    return base + "/v1" if base.count("/") == 2 else base


def _openai_knobs(ep: EndpointConfig, body: dict[str, Any]) -> None:
    for name in ("top_p", "seed", "service_tier"):
        value = getattr(ep, name)
        if value is not None:
            body[name] = value


class OpenAIProvider(Provider):
    name = "openai"

    def url(self, ep: EndpointConfig) -> str:
        return _openai_base(ep.base_url) + "/chat/completions"

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": ep.model,
            "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}],
            "temperature": ep.temperature,
            ep.token_limit_field: ep.max_output_tokens,
        }
        _openai_knobs(ep, body)
        if ep.structured_output:
            if ep.structured_style == "vllm":
                body["structured_outputs"] = {"json": prompt.json_schema}
            elif ep.structured_style == "guided_json":
                body["guided_json"] = prompt.json_schema
            elif ep.structured_style == "json_object":
                body["response_format"] = {"type": "json_object", "schema": prompt.json_schema}
            elif prompt.json_schema.get("type") == "object":  # OpenAI strict schemas need an object root
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "attribute_labels", "strict": True, "schema": prompt.json_schema},
                }
            # an array root (ECInstruct) has no strict OpenAI schema: the prompt states the format
        if ep.logprobs:  # llama-cpp-python returns none unless top_logprobs is set too
            body["logprobs"] = True
            body["top_logprobs"] = 1
        return body

    def body_bytes(self, ep: EndpointConfig, prompt: Prompt) -> bytes:
        # same JSON as body(), with the parts shared by many requests encoded once: the messages once per
        # prompt (one prompt goes to every endpoint), the schema once per attribute set
        body: dict[str, Any] = {
            "model": ep.model,
            "messages": prompt.openai_messages_json,
            "temperature": ep.temperature,
            ep.token_limit_field: ep.max_output_tokens,
        }
        _openai_knobs(ep, body)
        if ep.structured_output:
            schema = prompt.json_schema
            if ep.structured_style == "vllm":
                body["structured_outputs"] = {"json": _schema_fragment(schema)}
            elif ep.structured_style == "guided_json":
                body["guided_json"] = _schema_fragment(schema)
            elif ep.structured_style == "json_object":
                body["response_format"] = {"type": "json_object", "schema": _schema_fragment(schema)}
            elif schema.get("type") == "object":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "attribute_labels", "strict": True, "schema": _schema_fragment(schema)},
                }
        if ep.logprobs:  # llama-cpp-python returns none unless top_logprobs is set too
            body["logprobs"] = True
            body["top_logprobs"] = 1
        return orjson.dumps(body)

    def extract(self, data: Any) -> Extracted:
        try:
            choice = data["choices"][0]
            msg = choice["message"]
            text = msg.get("content")
            finish = _OPENAI_FINISH.get(choice.get("finish_reason"))
            if isinstance(msg.get("refusal"), str) and msg["refusal"]:
                finish = "refusal"
            if text is None and finish is not None:
                text = ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderResponseError("no choices[0].message in response") from None
        if not isinstance(text, str):
            raise ProviderResponseError("message content is not text")
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return Extracted(text, _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), None, finish)

    def extract_for(self, ep: EndpointConfig, prompt: Prompt, body: bytes, data: Any) -> Extracted:
        got = self.extract(data)
        if not ep.logprobs:
            return got
        return got._replace(confidence=label_confidences(data, got.text, [a.name for a in prompt.attributes]))


_ANTHROPIC_STOP = {"refusal": "refusal", "max_tokens": "length", "model_context_window_exceeded": "length"}


class AnthropicProvider(Provider):
    name = "anthropic"
    version = "2023-06-01"

    def url(self, ep: EndpointConfig) -> str:
        return _versioned(ep.base_url, ("v1",), "v1") + "/messages"

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "anthropic-version": self.version}
        if key:
            h["x-api-key"] = key
        return h

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        # no temperature: MessageCreateParams has none (anthropic SDK 2.17)
        body: dict[str, Any] = {
            "model": ep.model,
            "max_tokens": ep.max_output_tokens,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
        }
        if ep.structured_output and prompt.json_schema.get("type") == "object":
            body["output_config"] = {"format": {"type": "json_schema", "schema": prompt.json_schema}}
        return body

    def extract(self, data: Any) -> Extracted:
        try:
            parts = [c.get("text", "") for c in data["content"] if isinstance(c, dict) and c.get("type") == "text"]
        except (KeyError, TypeError):
            raise ProviderResponseError("no content in Messages response") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Extracted("".join(p for p in parts if isinstance(p, str)), _int(usage.get("input_tokens")),
                         _int(usage.get("output_tokens")), None, _ANTHROPIC_STOP.get(data.get("stop_reason")))


def _gemini_schema(schema: Any) -> Any:
    """JSON schema -> Gemini's OpenAPI subset (upper-case types, no additionalProperties)."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k == "additionalProperties":
                continue
            out[k] = v.upper() if k == "type" and isinstance(v, str) else _gemini_schema(v)
        return out
    if isinstance(schema, list):
        return [_gemini_schema(x) for x in schema]
    return schema


_GEMINI_FINISH = {"MAX_TOKENS": "length", **dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"),
    "safety")}


class GeminiProvider(Provider):
    name = "gemini"

    def url(self, ep: EndpointConfig) -> str:
        return _versioned(ep.base_url, ("v1", "v1beta", "v1alpha"), "v1beta") + f"/models/{ep.model}:generateContent"

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if key:
            h["x-goog-api-key"] = key
        return h

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        gen: dict[str, Any] = {"temperature": ep.temperature, "maxOutputTokens": ep.max_output_tokens}
        for name, key in (("top_p", "topP"), ("top_k", "topK"), ("seed", "seed")):
            if getattr(ep, name) is not None:
                gen[key] = getattr(ep, name)
        if ep.thinking_budget is not None:
            gen["thinkingConfig"] = {"thinkingBudget": ep.thinking_budget}
        if ep.structured_output:
            gen["responseMimeType"] = "application/json"
            gen["responseSchema"] = _gemini_schema(prompt.json_schema)
        body: dict[str, Any] = {
            "systemInstruction": {"parts": [{"text": prompt.system}]},
            "contents": [{"role": "user", "parts": [{"text": prompt.user}]}],
            "generationConfig": gen,
        }
        if ep.safety_settings:
            body["safetySettings"] = [s.model_dump() for s in ep.safety_settings]
        return body

    def extract(self, data: Any) -> Extracted:
        if not isinstance(data, dict):
            raise ProviderResponseError("not a generateContent response")
        usage = data.get("usageMetadata") if isinstance(data.get("usageMetadata"), dict) else {}
        tin, out, thoughts = (_int(usage.get(k)) for k in ("promptTokenCount", "candidatesTokenCount",
                                                          "thoughtsTokenCount"))
        # thinking is billed as output: the output is the answer's tokens plus the thoughts'
        tout = None if out is None and thoughts is None else (out or 0) + (thoughts or 0)
        feedback = data.get("promptFeedback")
        if not data.get("candidates") and isinstance(feedback, dict) and feedback.get("blockReason"):
            return Extracted("", tin, tout or 0, None, "safety")  # the prompt itself was blocked
        try:
            candidate = data["candidates"][0]
            finish = _GEMINI_FINISH.get(candidate.get("finishReason"))
            parts = (candidate.get("content") or {}).get("parts")
            if parts is None and finish is not None:
                parts = []
            text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderResponseError("no candidates[0].content.parts in response") from None
        return Extracted(text, tin, tout, None, finish)


class EmbeddingProvider(OpenAIProvider):
    """``/v1/embeddings``: product text (+ label descriptions not embedded yet) in, a JSON answer out."""

    name = "openai_embeddings"

    def __init__(self) -> None:
        self.index = EmbeddingIndex()

    def url(self, ep: EndpointConfig) -> str:
        return _openai_base(ep.base_url) + "/embeddings"

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        product_text = orjson.loads(prompt.user)  # the embedding prompt style is the product text as JSON
        return {"model": ep.model,
                "input": [product_text, *self.index.missing((ep.base_url, ep.model), prompt.attributes)]}

    def body_bytes(self, ep: EndpointConfig, prompt: Prompt) -> bytes:
        return orjson.dumps(self.body(ep, prompt))

    def extract_for(self, ep: EndpointConfig, prompt: Prompt, body: bytes, data: Any) -> Extracted:
        texts = request_inputs(body)
        try:
            vectors = response_vectors(data, len(texts))  # (n, d)
            key = (ep.base_url, ep.model)
            if len(texts) > 1:
                self.index.add(key, texts[1:], vectors[1:])
            answer = self.index.answer(key, prompt.attributes, vectors[0])
        except (KeyError, ValueError, TypeError) as e:
            raise ProviderResponseError(f"not an embeddings response for this request ({type(e).__name__})") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Extracted(orjson.dumps(answer).decode(), _int(usage.get("prompt_tokens")), 0)


PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAIProvider(), AnthropicProvider(), GeminiProvider(),
                                                      EmbeddingProvider())}
