"""LLM cost as a user sees it: dollars per LLM and per 1,000 decisions, from the gateway's counters.

The gateway counts, per LLM, the tokens every response reported and their price (``EndpointCounters.cost_usd``:
tokens x the LLM's configured price per 1k input/output tokens; the same figure ``llmens_llm_cost_total``
exports). A worker's ``/counters`` page serves them under ``"llm"`` next to its ``"worker"`` counters, which
count the decisions written (``decisions``) and, with adaptive querying on, the products by stop reason
(``adaptive_<reason>``). This module only does the arithmetic, so the demo and the report say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["cost_line", "cost_summary", "querying_mode"]


def _num(c: Mapping[str, Any] | Any, key: str) -> float:
    v = c.get(key, 0) if isinstance(c, Mapping) else getattr(c, key, 0)
    return float(v or 0)


def cost_summary(llm_counters: Mapping[str, Any], decisions: float) -> dict[str, Any]:
    """Per LLM and in all: dollars, tokens, requests and dollars per 1,000 decisions.

    ``llm_counters`` is ``{llm: EndpointCounters or its dict}`` (``/counters`` ``"llm"``); ``decisions`` the
    decisions those calls produced. Per-1k figures are ``None`` when there is no decision yet. The per-LLM
    shares add up to the total, so a user sees which LLM the bill comes from.
    """
    per_k = (lambda usd: 1000.0 * usd / decisions) if decisions > 0 else (lambda usd: None)
    llms = {}
    for name, c in sorted(llm_counters.items()):
        usd = _num(c, "cost_usd")
        llms[name] = {"usd": usd, "tokens_in": _num(c, "tokens_in"), "tokens_out": _num(c, "tokens_out"),
                      "requests": _num(c, "requests"), "usd_per_1k_decisions": per_k(usd)}
    total = sum(v["usd"] for v in llms.values())
    return {"llm": llms, "usd": total, "decisions": float(decisions), "usd_per_1k_decisions": per_k(total)}


def cost_line(summary: Mapping[str, Any], mode: str | None = None) -> str:
    """One line under 80 columns: ``LLM cost: $X per 1,000 decisions ($T in all[; mode])``."""
    tail = f"; {mode}" if mode else ""
    if summary["usd_per_1k_decisions"] is None:
        return f"LLM cost: ${summary['usd']:.4f} (no decisions yet{tail})"
    return f"LLM cost: ${summary['usd_per_1k_decisions']:.4f} per 1,000 decisions (${summary['usd']:.4f} in all{tail})"


def querying_mode(worker_counters: Mapping[str, Any]) -> str:
    """"adaptive" when the worker stopped asking early on any product (``adaptive_*`` counters), else full."""
    staged = sum(float(v or 0) for k, v in worker_counters.items() if str(k).startswith("adaptive_"))
    return "adaptive querying" if staged else "full fan-out"
