"""Request building and response/usage extraction for each provider API.

* ``openai``: chat completions (OpenAI, vLLM, Ollama ``/v1``, llama.cpp server, TGI, the simulator),
  with structured output as ``response_format`` json_schema (enum per attribute), vLLM
  ``structured_outputs`` or the older vLLM ``guided_json``.
* ``anthropic``: Messages API.
* ``gemini``: ``models/{model}:generateContent`` with ``responseSchema``.
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

__all__ = ["PROVIDERS", "Extracted", "Provider", "ProviderResponseError", "estimate_tokens"]


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

    def extract(self, data: Any) -> tuple[str, int | None, int | None]:
        """(answer text, input tokens, output tokens); tokens ``None`` when the response has no usage."""
        raise NotImplementedError

    def extract_for(self, ep: EndpointConfig, prompt: Prompt, body: bytes, data: Any) -> Extracted:
        """:meth:`extract` with the request at hand (providers whose answer depends on what was asked)."""
        return Extracted(*self.extract(data))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


_SCHEMA_JSON: dict[int, tuple[Any, orjson.Fragment]] = {}


def _schema_fragment(schema: dict[str, Any]) -> orjson.Fragment:
    """The JSON encoding of a (cached, shared) prompt schema, encoded once per schema object."""
    hit = _SCHEMA_JSON.get(id(schema))
    if hit is None or hit[0] is not schema:
        if len(_SCHEMA_JSON) >= 4096:
            _SCHEMA_JSON.clear()
        hit = _SCHEMA_JSON[id(schema)] = (schema, orjson.Fragment(orjson.dumps(schema)))  # keeps schema alive
    return hit[1]


class OpenAIProvider(Provider):
    name = "openai"

    def url(self, ep: EndpointConfig) -> str:
        return ep.base_url.rstrip("/") + "/chat/completions"

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
            "max_tokens": ep.max_output_tokens,
        }
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
            "max_tokens": ep.max_output_tokens,
        }
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

    def extract(self, data: Any) -> tuple[str, int | None, int | None]:
        try:
            msg = data["choices"][0]["message"]
            text = msg.get("content")
            if text is None and isinstance(msg.get("refusal"), str):
                text = ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderResponseError("no choices[0].message in response") from None
        if not isinstance(text, str):
            raise ProviderResponseError("message content is not text")
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return text, _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))

    def extract_for(self, ep: EndpointConfig, prompt: Prompt, body: bytes, data: Any) -> Extracted:
        text, tin, tout = self.extract(data)
        conf = label_confidences(data, text, [a.name for a in prompt.attributes]) if ep.logprobs else None
        return Extracted(text, tin, tout, conf)


class AnthropicProvider(Provider):
    name = "anthropic"
    version = "2023-06-01"

    def url(self, ep: EndpointConfig) -> str:
        return ep.base_url.rstrip("/") + "/messages"

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "anthropic-version": self.version}
        if key:
            h["x-api-key"] = key
        return h

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        return {
            "model": ep.model,
            "max_tokens": ep.max_output_tokens,
            "temperature": ep.temperature,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
        }

    def extract(self, data: Any) -> tuple[str, int | None, int | None]:
        try:
            parts = [c.get("text", "") for c in data["content"] if isinstance(c, dict) and c.get("type") == "text"]
        except (KeyError, TypeError):
            raise ProviderResponseError("no content in Messages response") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return "".join(p for p in parts if isinstance(p, str)), _int(usage.get("input_tokens")), _int(
            usage.get("output_tokens"))


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


class GeminiProvider(Provider):
    name = "gemini"

    def url(self, ep: EndpointConfig) -> str:
        return ep.base_url.rstrip("/") + f"/models/{ep.model}:generateContent"

    def headers(self, ep: EndpointConfig, key: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if key:
            h["x-goog-api-key"] = key
        return h

    def body(self, ep: EndpointConfig, prompt: Prompt) -> dict[str, Any]:
        gen: dict[str, Any] = {"temperature": ep.temperature, "maxOutputTokens": ep.max_output_tokens}
        if ep.structured_output:
            gen["responseMimeType"] = "application/json"
            gen["responseSchema"] = _gemini_schema(prompt.json_schema)
        return {
            "systemInstruction": {"parts": [{"text": prompt.system}]},
            "contents": [{"role": "user", "parts": [{"text": prompt.user}]}],
            "generationConfig": gen,
        }

    def extract(self, data: Any) -> tuple[str, int | None, int | None]:
        try:
            parts = data["candidates"][0]["content"]["parts"]
            text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
        except (KeyError, IndexError, TypeError):
            raise ProviderResponseError("no candidates[0].content.parts in response") from None
        usage = data.get("usageMetadata") if isinstance(data.get("usageMetadata"), dict) else {}
        return text, _int(usage.get("promptTokenCount")), _int(usage.get("candidatesTokenCount"))


class EmbeddingProvider(OpenAIProvider):
    """``/v1/embeddings``: product text (+ label descriptions not embedded yet) in, a JSON answer out."""

    name = "openai_embeddings"

    def __init__(self) -> None:
        self.index = EmbeddingIndex()

    def url(self, ep: EndpointConfig) -> str:
        return ep.base_url.rstrip("/") + "/embeddings"

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
