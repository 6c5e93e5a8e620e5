"""What an error response says about retrying it: how long to wait, and whether to retry at all.

The providers' SDKs honour these, so the gateway does too:

* ``retry-after-ms`` (OpenAI, Anthropic; milliseconds), read before ``Retry-After`` (seconds or an HTTP date);
* ``x-should-retry: true|false`` (OpenAI, Anthropic): the server's word on whether a retry can succeed,
  which overrides the status code;
* Gemini's ``google.rpc.RetryInfo`` in the error body of a 429: ``{"error": {"details": [{"@type":
  "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}``.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["parse_retry_after", "retry_hints"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_CAP_S = 600.0


def parse_retry_after(value: str | None, *, now: float | None = None, cap: float = _CAP_S) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(cap, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return min(cap, max(0.0, dt.timestamp() - (time.time() if now is None else now)))


def _retry_after_ms(value: str | None) -> float | None:
    try:
        ms = float(value) if value else None
    except ValueError:
        return None
    return None if ms is None or ms != ms else min(_CAP_S, max(0.0, ms / 1000.0))


def _body_retry_delay(raw: bytes) -> float | None:
    """``RetryInfo.retryDelay`` from a Google API error body, in seconds."""
    if b"RetryInfo" not in raw:
        return None
    try:
        data: Any = orjson.loads(raw)
        details = data["error"]["details"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    for d in details if isinstance(details, list) else ():
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(d.get("retryDelay", "")))
            if m:
                return min(_CAP_S, float(m.group(1)))
    return None


def retry_hints(headers: Mapping[str, str], raw: bytes) -> tuple[float | None, bool | None]:
    """(seconds to wait or ``None``, retry or not or ``None`` when the server does not say) of an error response."""
    delay = _retry_after_ms(headers.get("retry-after-ms"))
    if delay is None:
        delay = parse_retry_after(headers.get("Retry-After"))
    if delay is None:
        delay = _body_retry_delay(raw)
    should = headers.get("x-should-retry")
    should_retry = None if should is None else should.strip().lower() == "true" if should.strip().lower() in (
        "true", "false") else None
    return delay, should_retry
