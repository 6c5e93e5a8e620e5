"""Tell "the server refuses this request shape" apart from "the server failed", from an error response.

A refused shape (an unsupported ``response_format``, an unknown field, a wrong type) fails the same way on
every retry, so it must not be retried and must be reported in the server's own words. Servers disagree on
the status: OpenAI and vLLM answer 400, FastAPI-based servers 422, and llama-cpp-python answers **500** for
a pydantic validation error (seen: ``"1 validation error: ... ('body', 'response_format', 'type') ... Input
should be 'text' or 'json_object'"``). A 500 counts as a refusal only when its message says so.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["rejection_message"]

_SHAPE_WORDS = re.compile(r"validation error|input should be|literal_error|extra_forbidden|extra inputs are not "
                          r"permitted|unrecognized request argument|not supported|unsupported parameter", re.I)
_MAX = 300
_HINTS = (
    ("json_object", "a llama-cpp-python server wants `structured_style: json_object`"),
    ("response_format", "set `structured_style` to what this server accepts, or `structured_output: false`"),
    ("logprobs", "this server does not return logprobs: set `logprobs: false`"),
)


def _message(raw: bytes) -> str:
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:_MAX].decode("utf-8", "replace")
    err = data.get("error", data) if isinstance(data, dict) else data
    msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
    return (msg if isinstance(msg, str) else orjson.dumps(msg).decode())[:_MAX]


def rejection_message(status: int, raw: bytes) -> str | None:
    """The server's message (cut, plus a hint) when ``status``/``raw`` refuse the request shape, else ``None``."""
    if status not in (400, 422, 500):
        return None
    msg = " ".join(_message(raw).split())
    if status == 500 and not _SHAPE_WORDS.search(msg):
        return None
    hint = next((h for word, h in _HINTS if word in msg), None)
    return f"{msg} ({hint})" if hint else msg
