"""Reliable HTTP calls to one LLM endpoint.

Per endpoint: an ``asyncio.Semaphore`` for concurrency, token buckets for requests/min and tokens/min,
retries with capped exponential backoff and full jitter that honour the server's retry hints
(``retry-after-ms``, ``Retry-After`` in seconds or an HTTP date, Gemini's ``RetryInfo``; a 429 pauses the whole
endpoint until then; ``x-should-retry`` overrides the status, see :mod:`llmens_core.llm.retry_hints`), a
circuit breaker (open after N consecutive failed
attempts, half-open after a cooldown with a single probe), and an overall deadline per call. Usage and
cost come from the responses. A refusal or a safety block is a final answer (not retried, not a failure
for the breaker, billed once); a cut-off answer is asked once more with ``length_retry_max_output_tokens``
when the endpoint has one. Counters are plain dataclasses (no Prometheus import here).

Error texts never contain the API key: failures are reported as short kinds ("http_500", "timeout",
...), never as the text of an aiohttp exception or the request headers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.prompts import Prompt
from llmens_core.llm.providers import PROVIDERS, ProviderResponseError, estimate_tokens
from llmens_core.llm.rejections import rejection_message
from llmens_core.llm.retry_hints import parse_retry_after, retry_hints

__all__ = [
    "CallFailed",
    "CallResult",
    "CircuitBreaker",
    "EndpointClient",
    "EndpointCounters",
    "LatencyHistogram",
    "Slots",
    "TokenBucket",
    "parse_retry_after",
]

log = logging.getLogger("llmens.llm")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class LatencyHistogram:
    """Cumulative-friendly histogram of successful call latencies (seconds); Prometheus-style bounds."""

    bounds: tuple[float, ...] = LATENCY_BOUNDS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (inf for the overflow bucket)."""
        if not self.count:
            return None
        target, run = q * self.count, 0
        for i, c in enumerate(self.counts):
            run += c
            if run >= target:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")


@dataclass
class EndpointCounters:
    """Everything one endpoint did; exported to Prometheus elsewhere."""

    calls: int = 0
    """Logical calls (one per product asked, cache hits included)."""
    requests: int = 0
    """HTTP attempts sent."""
    successes: int = 0
    failures: int = 0
    """Calls that finally failed (after retries, breaker, deadline)."""
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Failed attempts by kind: http_<status>, timeout, connection, bad_response, malformed, breaker_open, deadline."""
    timeouts: int = 0
    breaker_state: str = "closed"
    breaker_opens: int = 0
    retry_after_waits: int = 0
    retry_after_wait_s: float = 0.0
    cache_hits: int = 0
    votes: int = 0
    abstentions: int = 0
    """Answers outside the attribute's label set."""
    missing: int = 0
    """Requested attributes the answer did not mention."""
    tokens_in: int = 0
    tokens_out: int = 0
    usage_estimated: int = 0
    """Responses without usage; tokens were estimated from text length."""
    cost_usd: float = 0.0
    in_flight: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    rejection: str | None = None
    """The server's own words the last time it rejected the shape of a request (kind ``rejected_request``)."""
    declined: dict[str, int] = field(default_factory=dict)
    """Responses that gave no answer, by the provider's finish reason: refusal, safety, length (billed)."""

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class CallFailed(Exception):
    """A call gave no usable answer; ``kind`` is a short reason safe to log (never contains a key)."""

    def __init__(self, kind: str, attempts: int = 0):
        super().__init__(f"{kind} after {attempts} attempt(s)" if attempts else kind)
        self.kind = kind
        self.attempts = attempts


@dataclass
class CallResult:
    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    attempts: int = 1
    cached: bool = False
    confidence: dict[str, float] | None = None
    """Per attribute, the probability of the answer's tokens (from logprobs), when the server returned them."""
    declined: str | None = None
    """Why the response holds no answer (refusal, safety, length): the call abstains."""


class TokenBucket:
    """Token bucket with reservation: ``acquire`` debits at once and sleeps off any deficit (FIFO-fair)."""

    def __init__(self, per_min: float, *, burst_s: float = 5.0):
        self.rate = per_min / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def delay_for(self, n: float) -> float:
        self._refill()
        return max(0.0, (n - self.tokens) / self.rate)

    async def acquire(self, n: float = 1.0, *, max_wait: float | None = None) -> bool:
        wait = self.delay_for(n)
        if max_wait is not None and wait > max_wait:
            return False
        self.tokens -= n
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def adjust(self, n: float) -> None:
        """Debit (or credit, if negative) tokens after the fact, e.g. actual minus estimated usage."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens - n)


class CircuitBreaker:
    """closed -> open after ``threshold`` consecutive failures -> half-open after ``cooldown_s`` (one probe)."""

    def __init__(self, threshold: int, cooldown_s: float, counters: EndpointCounters | None = None):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.counters = counters

    def _set(self, state: str) -> None:
        if state == "open" and self.state != "open" and self.counters is not None:
            self.counters.breaker_opens += 1
        self.state = state
        if self.counters is not None:
            self.counters.breaker_state = state

    def allow(self) -> bool:
        """May an attempt go out now? In half-open only one probe is in flight at a time."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if time.monotonic() - self.opened_at < self.cooldown_s:
                return False
            self._set("half_open")
            self.probe_in_flight = False
        if self.probe_in_flight:
            return False
        self.probe_in_flight = True
        return True

    def reopens_in(self) -> float:
        """Seconds until an attempt may go out again (0 unless open and cooling down)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - time.monotonic())

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.probe_in_flight = False
            if self.state != "closed":
                self._set("closed")
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.probe_in_flight = False
            self._set("open")

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled): let another one go."""
        if self.state == "half_open":
            self.probe_in_flight = False


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(False)


class Slots:
    """FIFO concurrency limit whose wait is bounded by a deadline.

    Cheaper than ``asyncio.Semaphore`` + ``asyncio.timeout`` on the hot path: a free slot is taken with
    two attribute operations (no future, no timer, no task switch); only a caller that has to queue
    gets a future and one timer for its deadline. ``release`` hands the slot straight to the oldest
    live waiter.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, n: int):
        self.free = n
        self.waiters: deque[asyncio.Future] = deque()

    def locked(self) -> bool:
        return self.free <= 0 or bool(self.waiters)

    def try_acquire(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self, timeout: float) -> bool:
        """A slot within ``timeout`` seconds (True), or False when the time ran out first."""
        if self.try_acquire():
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiters.append(fut)
        timer = loop.call_later(timeout, _expire, fut)
        got = False
        try:
            got = await fut
            return got
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()
            if not got:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass

    def release(self) -> None:
        w = self.waiters
        while w:
            fut = w.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.free += 1


class EndpointClient:
    """Calls one endpoint; shares the gateway's aiohttp session."""

    def __init__(self, config: EndpointConfig, session_getter: Callable[[], aiohttp.ClientSession],
                 counters: EndpointCounters | None = None, *, rng: random.Random | None = None):
        self.config = config
        self._session = session_getter
        self.counters = counters or EndpointCounters()
        self.provider = PROVIDERS[config.provider]
        self.sem = Slots(config.max_concurrency)
        self.rpm = TokenBucket(config.requests_per_min) if config.requests_per_min else None
        self.tpm = TokenBucket(config.tokens_per_min) if config.tokens_per_min else None
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, self.counters)
        self.paused_until = 0.0  # monotonic; set by 429 + Retry-After for the whole endpoint
        self.rng = rng or random.Random()
        self.url = self.provider.url(config)
        self.closed = False
        # the usual per-attempt timeout object (a fresh one only when the deadline is nearer)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)

    def __repr__(self) -> str:
        return f"EndpointClient({self.config.name!r}, model={self.config.model!r}, breaker={self.breaker.state})"

    def backoff(self, attempt: int) -> float:
        c = self.config
        return self.rng.uniform(0.0, min(c.backoff_cap_s, c.backoff_base_s * (2 ** attempt)))

    async def call(self, prompt: Prompt, *, deadline: float, accept: Callable[[str], bool] | None = None,
                   body: bytes | None = None) -> CallResult:
        """One logical call with retries; raises :class:`CallFailed` (kind only) when no answer came.

        ``deadline`` is a ``time.monotonic()`` instant. ``accept(text)`` returning False marks an answer
        as malformed (retried like a server error).
        """
        c, k = self.config, self.counters
        k.calls += 1
        if body is None:
            body = self.provider.body_bytes(c, prompt)
        headers = self.provider.headers(c, c.api_key())
        est_tokens = estimate_tokens(prompt.chars) + 8 * len(prompt.attributes)
        attempt, last_kind, asked_longer, cut_off_cost = 0, "no_attempt", False, 0.0
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return self._fail("deadline" if attempt == 0 else last_kind, attempt, count_kind="deadline")
            if self.paused_until > now:  # a 429 with Retry-After paused the endpoint
                wait = self.paused_until - now
                if wait >= remaining:
                    return self._fail(last_kind if attempt else "rate_limited", attempt, count_kind="deadline")
                await asyncio.sleep(wait)
                continue
            if not self.breaker.allow():
                return self._fail("breaker_open", attempt, count_kind="breaker_open")
            probe = self.breaker.state == "half_open"
            try:
                if self.rpm is not None and not await self.rpm.acquire(1, max_wait=remaining):
                    self.breaker.release_probe()
                    return self._fail("rate_limited", attempt, count_kind="deadline")
                if self.tpm is not None and not await self.tpm.acquire(est_tokens, max_wait=remaining):
                    self.breaker.release_probe()
                    return self._fail("rate_limited", attempt, count_kind="deadline")
                kind, retry_after, should_retry, result = await self._attempt(prompt, body, headers, deadline, accept,
                                                                              est_tokens)
            except asyncio.CancelledError:
                if probe:
                    self.breaker.release_probe()
                raise
            if kind is None:  # the deadline passed while waiting for a concurrency slot
                if probe:
                    self.breaker.release_probe()
                return self._fail("deadline" if attempt == 0 else last_kind, attempt, count_kind="deadline")
            attempt += 1
            if result is not None:
                self.breaker.record(True)  # a refusal or a cut-off is an answer: the server works
                if result.declined == "length" and c.length_retry_max_output_tokens and not asked_longer:
                    asked_longer, cut_off_cost = True, result.cost_usd
                    longer = c.model_copy(update={"max_output_tokens": c.length_retry_max_output_tokens})
                    body = self.provider.body_bytes(longer, prompt)
                    continue
                result.attempts = attempt
                result.cost_usd += cut_off_cost
                k.successes += 1
                return result
            last_kind = kind
            k.error(kind)
            if kind != "http_429":
                self.breaker.record(False)
            elif probe:
                self.breaker.release_probe()
            retryable = should_retry if should_retry is not None else kind in (
                "timeout", "connection", "bad_response", "malformed") or (
                kind.startswith("http_") and int(kind[5:]) in RETRYABLE_STATUS)
            if not retryable or attempt > c.max_retries:
                return self._fail(kind, attempt)
            delay = self.backoff(attempt - 1)
            if retry_after is not None:
                delay = max(delay, retry_after)
                k.retry_after_waits += 1
                k.retry_after_wait_s += retry_after
                if kind == "http_429":
                    self.paused_until = max(self.paused_until, time.monotonic() + retry_after)
            if time.monotonic() + delay >= deadline:
                return self._fail(kind, attempt)
            k.retries += 1
            await asyncio.sleep(delay)

    def _fail(self, kind: str, attempts: int, *, count_kind: str | None = None) -> CallResult:
        self.counters.failures += 1
        if count_kind:
            self.counters.error(count_kind)
        raise CallFailed(kind, attempts)

    async def _attempt(self, prompt: Prompt, body: bytes, headers: dict[str, str], deadline: float,
                       accept: Callable[[str], bool] | None, est_tokens: int
                       ) -> tuple[str | None, float | None, bool | None, CallResult | None]:
        """One HTTP attempt: (error kind, seconds the server asks to wait, its x-should-retry, result); kind
        ``None`` = no slot before the deadline."""
        c, k, slots = self.config, self.counters, self.sem
        if slots.free > 0 and not slots.waiters:  # Slots.try_acquire, inlined
            slots.free -= 1
        elif not await slots.acquire(deadline - time.monotonic()):
            return None, None, None, None
        try:
            t0 = time.monotonic()
            left = deadline - t0
            timeout = self._timeout if left >= c.timeout_s else aiohttp.ClientTimeout(total=max(0.001, left))
            k.requests += 1
            k.in_flight += 1
            try:
                async with self._session().post(self.url, data=body, headers=headers, timeout=timeout) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after, should_retry = (None, None) if status == 200 else retry_hints(resp.headers, raw)
            except TimeoutError:
                k.timeouts += 1
                return "timeout", None, None, None
            except (aiohttp.ClientError, OSError):
                return "connection", None, None, None
            finally:
                k.in_flight -= 1
            latency = time.monotonic() - t0
        finally:
            slots.release()
        if status != 200:
            rejected = rejection_message(status, raw)
            if rejected is not None:  # the server refuses this request shape: retrying cannot help
                if rejected != k.rejection:
                    log.error("llm %s: the server rejected the request shape (HTTP %d): %s", c.name, status, rejected)
                k.rejection = rejected
                return "rejected_request", None, None, None
            return f"http_{status}", retry_after, should_retry, None
        try:
            text, tin, tout, confidence, declined = self.provider.extract_for(c, prompt, body, orjson.loads(raw))
        except (orjson.JSONDecodeError, ProviderResponseError, AttributeError, TypeError):
            return "bad_response", None, None, None
        if tin is None or tout is None:
            k.usage_estimated += 1
            tin = tin if tin is not None else estimate_tokens(prompt.chars)
            tout = tout if tout is not None else estimate_tokens(len(text))
        if self.tpm is not None:
            self.tpm.adjust(tin + tout - est_tokens)
        cost = c.cost(tin, tout)
        k.tokens_in += tin
        k.tokens_out += tout
        k.cost_usd += cost  # paid even when the answer turns out malformed
        if declined is not None:
            k.declined[declined] = k.declined.get(declined, 0) + 1
            return "declined", None, None, CallResult(text, tin, tout, cost, latency, declined=declined)
        if accept is not None and not accept(text):
            return "malformed", None, None, None
        k.latency.observe(latency)
        return "ok", None, None, CallResult(text, tin, tout, cost, latency, confidence=confidence)
