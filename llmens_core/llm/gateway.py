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
from typing import Any

import aiohttp

from llmens_core.events import LabelVote, ProductUpdate
from llmens_core.llm.cache import ResponseCache, content_hash
from llmens_core.llm.client import CallFailed, CallResult, EndpointClient, EndpointCounters
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.parsing import ParsedAnswer, parse_answer_shared
from llmens_core.llm.prompts import build_prompt
from llmens_core.schema import Attribute, AttributeSchema

__all__ = ["Gateway"]

log = logging.getLogger("llmens.llm")

_set_attr = object.__setattr__
_new_vote = LabelVote.__new__
_VOTE_FIELDS = frozenset(("product_id", "version", "attribute", "llm", "label", "raw", "latency_s", "cost_usd",
                          "error", "confidence"))
# A vote built from values this module produced (right types by construction) needs no validation; the
# contract is validated at the Kafka boundary. This is ``LabelVote.model_construct`` with every field
# given, minus its per-field alias/default loop (which costs more than the HTTP client per vote).
_FAST_VOTES = (
    set(LabelVote.model_fields) == _VOTE_FIELDS
    and all(f.alias is None and f.validation_alias is None for f in LabelVote.model_fields.values())
    and not LabelVote.__pydantic_post_init__
    and not LabelVote.__private_attributes__
)


def _vote(product_id: str, version: int, attribute: str, llm: str, label: str | None, raw: str | None,
          latency_s: float, cost_usd: float, confidence: float | None = None) -> LabelVote:
    if not _FAST_VOTES:  # pragma: no cover - LabelVote grew something model_construct must handle
        return LabelVote.model_construct(product_id=product_id, version=version, attribute=attribute, llm=llm,
                                         label=label, raw=raw, latency_s=latency_s, cost_usd=cost_usd, error=None,
                                         confidence=confidence)
    v = _new_vote(LabelVote)
    _set_attr(v, "__dict__", {"product_id": product_id, "version": version, "attribute": attribute, "llm": llm,
                              "label": label, "raw": raw, "latency_s": latency_s, "cost_usd": cost_usd,
                              "error": None, "confidence": confidence})
    _set_attr(v, "__pydantic_fields_set__", set(_VOTE_FIELDS))
    _set_attr(v, "__pydantic_extra__", None)
    _set_attr(v, "__pydantic_private__", None)
    return v


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
        self._enabled: list[str] = []
        self._asks: dict[tuple[str, ...], tuple[list[str], list[Attribute], list[str]]] = {}
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
                log.info("llm %s: %s API at %s (model %s)", name, ep.provider, clients[name].url, ep.model)
        for name, old in self._clients.items():
            if clients.get(name) is not old:
                old.closed = True
        self._configs, self._clients = new, clients
        self._enabled = [n for n, ep in new.items() if ep.enabled]

    @property
    def endpoints(self) -> dict[str, EndpointConfig]:
        return dict(self._configs)

    def available_in(self, llms: Sequence[str] | None = None) -> float:
        """Seconds until at least one of ``llms`` (default: every enabled LLM) accepts a call again.

        0 when any of them has its circuit breaker closed or half-open; else the shortest remaining cooldown.
        A caller whose every LLM failed waits this long before retrying, so breakers opened by a burst of
        failures do not turn their whole cool-down into failed retries.
        """
        names = self._enabled if llms is None else [n for n in llms if n in self._clients]
        if not names:
            return 0.0
        return min(self._clients[n].breaker.reopens_in() for n in names)

    def counters(self) -> dict[str, EndpointCounters]:
        """Counters of every endpoint ever configured (removed ones keep their final figures)."""
        return dict(self._counters)

    # -- labelling -------------------------------------------------------------------------------
    def _resolve(self, attributes: Sequence[str]) -> tuple[list[str], list[Attribute], list[str]]:
        """(requested names without duplicates, known attributes, unknown names), memoised per request."""
        key = tuple(attributes)
        hit = self._asks.get(key)
        if hit is None:
            names = list(dict.fromkeys(key))
            hit = (names, [self.schema[a] for a in names if a in self.schema],
                   [a for a in names if a not in self.schema])
            if len(self._asks) > 1024:
                self._asks.clear()
            self._asks[key] = hit
        return hit

    async def label(self, product: ProductUpdate, attributes: Sequence[str], *,
                    llms: Sequence[str] | None = None) -> list[LabelVote]:
        """One vote per (asked LLM, attribute); failures are votes with ``label=None`` and ``error``."""
        if self._session is None:
            await self.start()
        _, attrs, unknown = self._resolve(attributes)
        if llms is None:
            targets = self._enabled
            missing_llms: list[str] = []
        else:
            wanted = list(dict.fromkeys(llms))
            targets = [n for n in wanted if n in self._configs and self._configs[n].enabled]
            missing_llms = [n for n in wanted if n not in targets]
        votes: list[LabelVote] = []
        if attrs and targets:
            deadline = time.monotonic() + self.product_deadline_s
            # the content hash only keys the response cache
            h = content_hash(product.content_text()) if self.cache is not None else ""
            memo: dict = {}
            clients = self._clients
            asked = set(targets)
            results = await asyncio.gather(
                *(self._ask_with_fallback(c, product, attrs, h, deadline, asked, memo) if c.config.fallback
                  else self._ask(c, product, attrs, h, deadline, memo)
                  for c in [clients[n] for n in targets]),
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
        votes = await self._ask(client, product, attrs, h, deadline, memo)
        fb = client.config.fallback
        # a failed call gives error votes only (attrs is never empty here)
        if votes[0].error is not None and fb and fb not in asked and fb in self._clients and self._configs[fb].enabled:
            votes.extend(await self._ask(self._clients[fb], product, attrs, h, deadline, memo))
        return votes

    def _failed(self, product: ProductUpdate, attrs: Sequence[Attribute], llm: str, error: str,
                latency: float = 0.0) -> list[LabelVote]:
        return [LabelVote(product_id=product.product_id, version=product.version, attribute=a.name, llm=llm,
                          label=None, latency_s=latency, error=error) for a in attrs]

    def _declined(self, product: ProductUpdate, attrs: Sequence[Attribute], llm: str, res: CallResult,
                  latency: float) -> list[LabelVote]:
        """A refusal, safety block or cut-off: every attribute abstains (``raw`` says why), the cost is shared."""
        k = self._counters[llm]
        k.votes += len(attrs)
        k.abstentions += len(attrs)
        share, raw = res.cost_usd / len(attrs), f"declined:{res.declined}"
        return [_vote(product.product_id, product.version, a.name, llm, None, raw, latency, share) for a in attrs]

    @staticmethod
    def _prompt(product: ProductUpdate, attrs: list[Attribute], style: str, memo: dict[str, Any]):
        # one prompt per style per label() call, shared by the endpoints using that style
        prompt = memo.get(style)
        if prompt is None:
            prompt = memo[style] = build_prompt(product, attrs, style)
        return prompt

    async def _ask(self, client: EndpointClient, product: ProductUpdate, attrs: list[Attribute], h: str,
                   deadline: float, memo: dict[str, Any]) -> list[LabelVote]:
        """The votes of one endpoint: all with ``error`` set when the call finally failed.

        No extra timer here: ``client.call`` never runs past ``deadline`` (each attempt's aiohttp timeout,
        waits for a slot, Retry-After pauses and backoff sleeps are all bounded by it)."""
        ep, k = client.config, client.counters
        prompt = self._prompt(product, attrs, ep.prompt, memo)
        missing_is_none = ep.prompt == "ecinstruct"
        t0 = time.monotonic()
        parsed: ParsedAnswer | None = None
        cost = 0.0
        conf: dict[str, float] = {}
        if self.cache is not None:
            hit = self.cache.get(ep.model, prompt.version, h)
            if hit is not None:
                k.calls += 1
                k.cache_hits += 1
                parsed = parse_answer_shared(hit.text, attrs, missing_is_none=missing_is_none)
        if parsed is None:
            box: list[ParsedAnswer] = []

            def accept(text: str) -> bool:
                p = parse_answer_shared(text, attrs, missing_is_none=missing_is_none)
                if not p.found_json:
                    return False
                box.append(p)
                return True

            try:
                res = await client.call(prompt, deadline=deadline, accept=accept)
            except CallFailed as exc:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("llm %s failed for %s: %s", ep.name, product.product_id, exc)
                return self._failed(product, attrs, ep.name, str(exc), time.monotonic() - t0)
            if res.declined is not None:
                return self._declined(product, attrs, ep.name, res, time.monotonic() - t0)
            parsed = box[-1]
            cost = res.cost_usd
            conf = res.confidence or conf
            if self.cache is not None:
                self.cache.put(ep.model, prompt.version, h, res.text, res.tokens_in, res.tokens_out)
        latency = time.monotonic() - t0
        k.votes += len(attrs)
        k.abstentions += parsed.abstentions
        k.missing += parsed.missing
        share = cost / len(attrs)
        pid, ver, llm, labels, raw = product.product_id, product.version, ep.name, parsed.labels, parsed.raw
        if not _FAST_VOTES:  # pragma: no cover
            return [_vote(pid, ver, a.name, llm, labels[a.name], raw[a.name], latency, share, conf.get(a.name))
                    for a in attrs]
        votes = []
        for a in attrs:  # _vote, inlined
            name = a.name
            v = _new_vote(LabelVote)
            _set_attr(v, "__dict__", {"product_id": pid, "version": ver, "attribute": name, "llm": llm,
                                      "label": labels[name], "raw": raw[name], "latency_s": latency,
                                      "cost_usd": share, "error": None, "confidence": conf.get(name)})
            _set_attr(v, "__pydantic_fields_set__", set(_VOTE_FIELDS))
            _set_attr(v, "__pydantic_extra__", None)
            _set_attr(v, "__pydantic_private__", None)
            votes.append(v)
        return votes
