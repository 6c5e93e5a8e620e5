"""The backfill's requests: one per (product version, LLM), asking every requested attribute at once.

The prompt and the request body are the synchronous gateway's own (:func:`build_prompt`,
:meth:`Provider.body`), so a batch line asks exactly what the stream would ask. A request's ``custom_id`` is a
stable hash of (product, version, LLM): the same catalogue gives the same ids on every run, which is what lets a
rerun tell what was already asked (Anthropic allows ``[a-zA-Z0-9_-]{1,64}``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmens_core.events import ProductUpdate
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.prompts import Prompt, build_prompt
from llmens_core.llm.providers import PROVIDERS
from llmens_core.schema import Attribute, AttributeSchema

__all__ = ["BATCH_PROVIDERS", "BatchRequest", "custom_id", "plan_requests"]

BATCH_PROVIDERS = frozenset({"openai", "anthropic", "gemini"})
"""Providers with a batch API (embeddings endpoints are asked synchronously by the stream only)."""


def custom_id(product_id: str, version: int, llm: str) -> str:
    """The request's id in a batch: 32 hex characters of SHA-256 of (product, version, LLM)."""
    return hashlib.sha256(f"{product_id}\x1f{version}\x1f{llm}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchRequest:
    """One product version asked of one LLM."""

    custom_id: str
    product: ProductUpdate
    llm: str
    attributes: tuple[Attribute, ...]
    prompt: Prompt

    def body(self, ep: EndpointConfig) -> dict[str, Any]:
        """The request body the gateway would send to ``ep`` for this product (no duplicate body building)."""
        return PROVIDERS[ep.provider].body(ep, self.prompt)


def plan_requests(products: Iterable[ProductUpdate], endpoints: Sequence[EndpointConfig],
                  schema: AttributeSchema) -> tuple[list[BatchRequest], list[tuple[ProductUpdate, str]]]:
    """Requests for every enabled batch-capable endpoint, and the products that cannot be asked (with why).

    A product is asked its own attributes, or its category's defaults (as the stream does); a later line of
    the same product id replaces an earlier one unless its version is older.
    """
    latest: dict[str, ProductUpdate] = {}
    for p in products:
        old = latest.get(p.product_id)
        if old is None or p.version >= old.version:
            latest[p.product_id] = p
    eps = [e for e in endpoints if e.enabled and e.provider in BATCH_PROVIDERS]
    out: list[BatchRequest] = []
    unasked: list[tuple[ProductUpdate, str]] = []
    for p in latest.values():
        names, unknown = schema.requested(p.attributes, p.category)
        if not names:
            unasked.append((p, f"no known attribute to ask (unknown: {unknown})" if unknown
                            else f"no attribute requested and none for category {p.category!r}"))
            continue
        attrs = [schema[n] for n in names]
        prompts: dict[str, Prompt] = {}
        for ep in eps:
            prompt = prompts.get(ep.prompt) or prompts.setdefault(ep.prompt, build_prompt(p, attrs, ep.prompt))
            out.append(BatchRequest(custom_id(p.product_id, p.version, ep.name), p, ep.name, tuple(attrs), prompt))
    return out, unasked
