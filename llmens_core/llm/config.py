"""Endpoint configuration: which LLMs to ask, how hard, and at what price.

The API key itself is never part of a config: ``api_key_env`` names the environment variable that
holds it, read at request time by :meth:`EndpointConfig.api_key` and never stored on the object, so it
cannot leak through ``repr``, logs or exception messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["EndpointConfig", "SafetySetting", "load_endpoints"]

# The knobs only some providers' APIs have (checked against their SDKs' request types: openai 3.63,
# anthropic 2.17, google-genai 3.6). Setting one for another provider is refused by name rather than
# sent (the API would refuse the request) or dropped (the user would believe it applies).
_KNOB_PROVIDERS: dict[str, frozenset[str]] = {
    "temperature": frozenset({"openai", "gemini", "openai_embeddings"}),
    "top_p": frozenset({"openai", "gemini"}),
    "top_k": frozenset({"gemini"}),
    "seed": frozenset({"openai", "gemini"}),
    "service_tier": frozenset({"openai"}),
    "token_limit_field": frozenset({"openai"}),
    "thinking_budget": frozenset({"gemini"}),
    "safety_settings": frozenset({"gemini"}),
}


class SafetySetting(BaseModel):
    """One Gemini safety setting, e.g. ``{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_ONLY_HIGH}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    category: str = Field(pattern=r"^HARM_CATEGORY_[A-Z_]+$")
    threshold: str = Field(pattern=r"^(HARM_BLOCK_THRESHOLD_UNSPECIFIED|BLOCK_[A-Z_]+|OFF)$")


class EndpointConfig(BaseModel):
    """One LLM endpoint (a model behind a base URL)."""

    # hide_input_in_errors: a key pasted into a wrong field must not be echoed in validation errors
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, description="unique name; the `llm` of every vote it gives")
    provider: Literal["openai", "anthropic", "gemini", "openai_embeddings"] = Field(
        "openai", description="`openai_embeddings`: classify by cosine similarity via /v1/embeddings (no generation)")
    base_url: str = Field(description="e.g. https://api.openai.com/v1, http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = Field(None, description="NAME of the env var holding the key (never the key)")
    family: str | None = Field(None, description="base model family, so the aggregator can pool correlated LLMs")
    max_concurrency: int = Field(16, ge=1)
    requests_per_min: float | None = Field(None, gt=0)
    tokens_per_min: float | None = Field(None, gt=0)
    timeout_s: float = Field(30.0, gt=0, description="per HTTP attempt")
    max_retries: int = Field(3, ge=0)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_cap_s: float = Field(20.0, ge=0)
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit breaker")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="open -> half-open (one probe) after this")
    price_in_per_1k: float = Field(0.0, ge=0)
    price_out_per_1k: float = Field(0.0, ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1, description="`llmens backfill`: the batch API's price as a share "
                                                              "of the synchronous one (OpenAI, Anthropic, Gemini: 0.5)")
    max_output_tokens: int = Field(512, ge=1)
    length_retry_max_output_tokens: int | None = Field(
        None, ge=1, description="an answer cut off at max_output_tokens is asked once more with this budget; "
                                "unset: a cut-off answer abstains")
    temperature: float = Field(0.0, ge=0, description="openai, gemini (the Anthropic Messages API has none)")
    top_p: float | None = Field(None, gt=0, le=1, description="openai, gemini")
    top_k: int | None = Field(None, ge=1, description="gemini")
    seed: int | None = Field(None, description="openai, gemini: best-effort reproducible sampling")
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = Field(
        None, description="openai: processing tier (flex: cheaper, slower)")
    token_limit_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="openai: the field carrying max_output_tokens (o-series and newer models "
                                  "take only max_completion_tokens; many compatible servers only max_tokens)")
    thinking_budget: int | None = Field(
        None, ge=-1, description="gemini: generationConfig.thinkingConfig.thinkingBudget (0 off, -1 dynamic)")
    safety_settings: list[SafetySetting] | None = Field(None, description="gemini: safetySettings")
    fallback: str | None = Field(None, description="endpoint asked instead when this one finally fails")
    prompt: Literal["default", "ecinstruct", "embedding"] = "default"
    structured_output: bool = Field(True, description="send a JSON schema with enums where the provider supports it")
    structured_style: Literal["response_format", "json_object", "vllm", "guided_json"] = Field(
        "response_format",
        description="OpenAI `response_format` json_schema (also llama.cpp's llama-server), `json_object` "
                    "(llama-cpp-python: `response_format` {type: json_object, schema}, turned into a grammar), "
                    "vLLM `structured_outputs`, or older vLLM `guided_json`",
    )
    logprobs: bool = Field(False, description="ask for token log-probabilities; a vote's confidence is the "
                                              "probability of its label's tokens")
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _embedding_prompt(cls, data: Any) -> Any:
        # an embeddings endpoint is sent the product text alone, never a chat prompt
        if isinstance(data, Mapping) and data.get("provider") == "openai_embeddings" and "prompt" not in data:
            return {**data, "prompt": "embedding"}
        return data

    @model_validator(mode="after")
    def _embedding_prompt_only_for_embeddings(self) -> EndpointConfig:
        if (self.provider == "openai_embeddings") != (self.prompt == "embedding"):
            raise ValueError("prompt `embedding` goes with provider `openai_embeddings`, and only with it")
        return self

    @model_validator(mode="after")
    def _knobs_the_provider_has(self) -> EndpointConfig:
        given = self.model_fields_set
        wrong = sorted(k for k, providers in _KNOB_PROVIDERS.items()
                       if k in given and self.provider not in providers
                       and getattr(self, k) != type(self).model_fields[k].default)
        if wrong:
            raise ValueError(f"provider {self.provider} has no {', '.join(wrong)} "
                             f"({'; '.join(f'{k}: {sorted(_KNOB_PROVIDERS[k])}' for k in wrong)})")
        if self.length_retry_max_output_tokens is not None and \
                self.length_retry_max_output_tokens <= self.max_output_tokens:
            raise ValueError("length_retry_max_output_tokens must be larger than max_output_tokens")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_env_name(cls, v: str | None) -> str | None:
        # Refuse things that look like a key pasted into the wrong field (and never echo them back).
        if v is not None and (not v.replace("_", "").isalnum() or v.startswith(("sk-", "sk_"))):
            raise ValueError("api_key_env must be the NAME of an environment variable, not a key")
        return v

    def api_key(self) -> str | None:
        """The key from the environment at call time (not cached on the object)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in / 1000.0 * self.price_in_per_1k + tokens_out / 1000.0 * self.price_out_per_1k

    def batch_cost(self, tokens_in: int, tokens_out: int) -> float:
        """:meth:`cost` through the provider's batch API (``batch_discount`` of the list price)."""
        return self.cost(tokens_in, tokens_out) * self.batch_discount


def load_endpoints(source: str | Path | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[EndpointConfig]:
    """Endpoints from a YAML/JSON file path, a dict ``{"endpoints": [...]}`` or a list of dicts."""
    if isinstance(source, (str, Path)):
        text = Path(source).read_bytes()
        raw: Any = orjson.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
    else:
        raw = source
    if isinstance(raw, Mapping):
        raw = raw.get("endpoints", raw.get("llms", []))
    endpoints = [e if isinstance(e, EndpointConfig) else EndpointConfig.model_validate(e) for e in raw]
    names = [e.name for e in endpoints]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate endpoint names: {dup}")
    return endpoints
