"""The LLM gateway the streaming layer calls: one product in, one vote per (LLM, attribute) out.

``Gateway.label`` asks every enabled endpoint (or just the named ones) concurrently, one request per
product per LLM for all requested attributes, through the response cache when one is given. It never
raises for LLM/HTTP failures: an LLM that finally failed gives ``label=None`` with ``error`` set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import aiohttp
import orjson

from llmens_core.events import LabelVote, ProductUpdate
from llmens_core.llm.cache import ResponseCache, content_hash
from llmens_core.llm.client import CallFailed, EndpointClient, EndpointCounters
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.parsing import ParsedAnswer, parse_answer
from llmens_core.llm.prompts import build_prompt
from llmens_core.schema import Attribute, AttributeSchema

__all__ = ["Gateway"]

log = logging.getLogger("llmens.llm")


class Gateway:
    """Ask several LLMs at once, reliably. Use as ``async with Gateway(...) as gw``."""

    def __init__(self, endpoints: Sequence[EndpointConfig], schema: AttributeSchema, *,
                 cache: ResponseCache | None = None, product_deadline_s: float = 30.0,
                 session: aiohttp.ClientSession | None = None):
        self.schema = schema
        self.cache = cache
        self.product_deadline_s = product_deadline_s
        self._session = session
        self._own_session = session is None
        self._configs: dict[str, EndpointConfig] = {}
        self._clients: dict[str, EndpointClient] = {}
        self._counters: dict[str, EndpointCounters] = {}
        self.set_endpoints(endpoints)

    def __repr__(self) -> str:
        return f"Gateway(endpoints={list(self._configs)}, cache={self.cache!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> Gateway:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
                skip_auto_headers=("User-Agent",),
            )
            self._own_session = True
        return self

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._own_session else self._session

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("Gateway is not started (use `async with Gateway(...)` or `await gw.start()`)")
        return self._session

    # -- configuration ---------------------------------------------------------------------------
    def set_endpoints(self, endpoints: Sequence[EndpointConfig]) -> None:
        """Hot reconfiguration: added endpoints start being asked, removed ones stop (calls in flight
        finish). An unchanged endpoint keeps its client (breaker, buckets); a changed one gets a new
        client; counters are kept per name across changes."""
        new: dict[str, EndpointConfig] = {}
        for ep in endpoints:
            if ep.name in new:
                raise ValueError(f"duplicate endpoint name {ep.name!r}")
            new[ep.name] = ep
        clients: dict[str, EndpointClient] = {}
        for name, ep in new.items():
            old = self._clients.get(name)
            if old is not None and old.config == ep:
                clients[name] = old
            else:
                counters = self._counters.setdefault(name, EndpointCounters())
                clients[name] = EndpointClient(ep, self._get_session, counters)
        for name, old in self._clients.items():
            if clients.get(name) is not old:
                old.closed = True
        self._configs, self._clients = new, clients

    @property
    def endpoints(self) -> dict[str, EndpointConfig]:
        return dict(self._configs)

    def counters(self) -> dict[str, EndpointCounters]:
        """Counters of every endpoint ever configured (removed ones keep their final figures)."""
        return dict(self._counters)

    # -- labelling -------------------------------------------------------------------------------
    async def label(self, product: ProductUpdate, attributes: Sequence[str], *,
                    llms: Sequence[str] | None = None) -> list[LabelVote]:
        """One vote per (asked LLM, attribute); failures are votes with ``label=None`` and ``error``."""
        if self._session is None:
            await self.start()
        names = list(dict.fromkeys(attributes))
        attrs = [self.schema[a] for a in names if a in self.schema]
        unknown = [a for a in names if a not in self.schema]
        if llms is None:
            targets = [n for n, ep in self._configs.items() if ep.enabled]
            missing_llms: list[str] = []
        else:
            wanted = list(dict.fromkeys(llms))
            targets = [n for n in wanted if n in self._configs and self._configs[n].enabled]
            missing_llms = [n for n in wanted if n not in targets]
        deadline = time.monotonic() + self.product_deadline_s
        votes: list[LabelVote] = []
        if attrs and targets:
            h = content_hash(product.content_text())
            memo: dict = {}
            results = await asyncio.gather(
                *(self._ask_with_fallback(self._clients[n], product, attrs, h, deadline, set(targets), memo)
                  for n in targets),
                return_exceptions=True,
            )
            for name, res in zip(targets, results, strict=True):
                if isinstance(res, BaseException):
                    if isinstance(res, asyncio.CancelledError):
                        raise res
                    log.error("llm %s: unexpected %s while labelling %s", name, type(res).__name__,
                              product.product_id)
                    votes.extend(self._failed(product, attrs, name, f"internal_error: {type(res).__name__}"))
                else:
                    votes.extend(res)
        for name in missing_llms:
            votes.extend(self._failed(product, attrs, name, "unknown_or_disabled_llm"))
        for a in unknown:
            for name in targets:
                votes.append(LabelVote(product_id=product.product_id, version=product.version, attribute=a,
                                       llm=name, label=None, error="unknown_attribute"))
        return votes

    async def _ask_with_fallback(self, client: EndpointClient, product: ProductUpdate, attrs: list[Attribute],
                                 h: str, deadline: float, asked: set[str], memo: dict) -> list[LabelVote]:
        votes, failed = await self._ask(client, product, attrs, h, deadline, memo)
        fb = client.config.fallback
        if failed and fb and fb not in asked and fb in self._clients and self._configs[fb].enabled:
            fb_votes, _ = await self._ask(self._clients[fb], product, attrs, h, deadline, memo)
            votes.extend(fb_votes)
        return votes

    def _failed(self, product: ProductUpdate, attrs: Sequence[Attribute], llm: str, error: str,
                latency: float = 0.0) -> list[LabelVote]:
        return [LabelVote(product_id=product.product_id, version=product.version, attribute=a.name, llm=llm,
                          label=None, latency_s=latency, error=error) for a in attrs]

    @staticmethod
    def _prompt(product: ProductUpdate, attrs: list[Attribute], style: str, memo: dict):
        # one prompt per style per label() call, shared by the endpoints using that style
        prompt = memo.get(style)
        if prompt is None:
            prompt = memo[style] = build_prompt(product, attrs, style)
        return prompt

    async def _ask(self, client: EndpointClient, product: ProductUpdate, attrs: list[Attribute], h: str,
                   deadline: float, memo: dict) -> tuple[list[LabelVote], bool]:
        ep, k = client.config, client.counters
        prompt = self._prompt(product, attrs, ep.prompt, memo)
        missing_is_none = ep.prompt == "ecinstruct"
        t0 = time.monotonic()
        parsed: ParsedAnswer | None = None
        cost = 0.0
        if self.cache is not None:
            hit = self.cache.get(ep.model, prompt.version, h)
            if hit is not None:
                k.calls += 1
                k.cache_hits += 1
                parsed = parse_answer(hit.text, attrs, missing_is_none=missing_is_none)
        if parsed is None:
            box: list[ParsedAnswer] = []

            def accept(text: str) -> bool:
                p = parse_answer(text, attrs, missing_is_none=missing_is_none)
                if not p.found_json:
                    return False
                box.append(p)
                return True

            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 0.05):
                    res = await client.call(prompt, deadline=deadline, accept=accept)
            except CallFailed as exc:
                log.debug("llm %s failed for %s: %s", ep.name, product.product_id, exc)
                return self._failed(product, attrs, ep.name, str(exc), time.monotonic() - t0), True
            except TimeoutError:
                k.failures += 1
                k.error("deadline")
                return self._failed(product, attrs, ep.name, "deadline", time.monotonic() - t0), True
            parsed = box[-1]
            cost = res.cost_usd
            if self.cache is not None:
                self.cache.put(ep.model, prompt.version, h, res.text, res.tokens_in, res.tokens_out)
        latency = time.monotonic() - t0
        k.votes += len(attrs)
        k.abstentions += parsed.abstentions
        k.missing += parsed.missing
        share = cost / len(attrs)
        pid, ver = product.product_id, product.version
        # model_construct: every field here is produced by this module with the right type (validation
        # would cost more than the HTTP client per vote)
        return [
            LabelVote.model_construct(product_id=pid, version=ver, attribute=a.name, llm=ep.name,
                                      label=parsed.labels[a.name], raw=parsed.raw[a.name], latency_s=latency,
                                      cost_usd=share, error=None)
            for a in attrs
        ], False


