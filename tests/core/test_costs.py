"""Cost per LLM and per 1,000 decisions from gateway counters (objects or the /counters dicts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmens_core.costs import cost_line, cost_summary, querying_mode
from llmens_core.llm.client import EndpointCounters


def test_cost_summary_from_counter_objects_and_dicts_agree():
    c = EndpointCounters()
    c.requests, c.tokens_in, c.tokens_out, c.cost_usd = 10, 4000, 200, 0.012
    as_obj = cost_summary({"a": c, "b": {"requests": 5, "cost_usd": 0.003}}, 30)
    assert as_obj["llm"]["a"] == {"usd": 0.012, "tokens_in": 4000.0, "tokens_out": 200.0, "requests": 10.0,
                                  "usd_per_1k_decisions": pytest.approx(0.4)}
    assert as_obj["usd"] == pytest.approx(0.015) and as_obj["usd_per_1k_decisions"] == pytest.approx(0.5)
    assert cost_line(as_obj, "full fan-out") == "LLM cost: $0.5000 per 1,000 decisions ($0.0150 in all; full fan-out)"


def test_no_decisions_yet_has_no_per_1000_figure():
    s = cost_summary({"a": {"cost_usd": 0.01}}, 0)
    assert s["usd_per_1k_decisions"] is None and s["llm"]["a"]["usd_per_1k_decisions"] is None
    assert cost_line(s) == "LLM cost: $0.0100 (no decisions yet)"


def test_querying_mode_reads_the_adaptive_stop_counters():
    assert querying_mode({"decisions": 5}) == "full fan-out"
    assert querying_mode({"decisions": 5, "adaptive_explore": 0}) == "full fan-out"
    assert querying_mode({"decisions": 5, "adaptive_confident": 3}) == "adaptive querying"


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 100), max_size=8),
       st.integers(1, 10**6))
def test_per_llm_shares_add_up_to_the_total(usd, decisions):
    s = cost_summary({n: {"cost_usd": v} for n, v in usd.items()}, decisions)
    assert s["usd"] == pytest.approx(sum(usd.values()))
    assert sum(v["usd_per_1k_decisions"] for v in s["llm"].values()) == pytest.approx(s["usd_per_1k_decisions"])
    assert s["usd_per_1k_decisions"] == pytest.approx(1000 * s["usd"] / decisions)
