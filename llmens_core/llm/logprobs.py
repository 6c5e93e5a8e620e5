"""A vote's confidence from token log-probabilities: the probability the model gave its label's tokens.

OpenAI-style ``choices[0].logprobs.content`` is a list of ``{"token", "logprob"}`` whose tokens concatenate to
the answer text (OpenAI, vLLM, llama.cpp and llama-cpp-python all return this shape). For each attribute the
answer's JSON value string ``"<attr>": "<value>"`` is located in the text, and the log-probabilities of the
tokens overlapping the value are summed: confidence = exp(sum), in (0, 1]. A server that constrains decoding
with a grammar reports the model's own distribution before the grammar (llama-cpp-python does), so the figure
is the model's belief, not the sampler's. Attributes whose value cannot be located get no confidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["label_confidences"]


def _tokens(data: Any) -> list[tuple[str, float]] | None:
    try:
        content = data["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, list):
        return None
    out = []
    for t in content:
        if not isinstance(t, dict) or not isinstance(t.get("token"), str):
            return None
        lp = t.get("logprob")
        if not isinstance(lp, (int, float)) or isinstance(lp, bool) or math.isnan(lp):
            return None
        out.append((t["token"], float(min(0.0, lp))))
    return out


def label_confidences(data: Any, text: str, attributes: Sequence[str]) -> dict[str, float] | None:
    """``{attribute: probability of its value's tokens}`` or ``None`` when the response has no usable logprobs."""
    toks = _tokens(data)
    if not toks or "".join(t for t, _ in toks) != text:
        return None
    ends, pos = [], 0
    for t, _ in toks:
        pos += len(t)
        ends.append(pos)
    out: dict[str, float] = {}
    for name in attributes:
        m = re.search(r'"' + re.escape(name) + r'"\s*:\s*"([^"\\]*)"', text)
        if m is None:
            continue
        lo, hi = m.span(1)
        if hi == lo:  # empty value: the closing quote's token carries the choice
            hi = lo + 1
        total, start = 0.0, 0
        for (_, lp), end in zip(toks, ends, strict=True):
            if end > lo and start < hi:
                total += lp
            start = end
        out[name] = math.exp(total)
    return out
