"""LLM cost end to end: a worker process on a real broker asks the simulated LLMs over HTTP; its ``/metrics``
counter ``llmens_llm_cost_total{llm}``, its ``/counters`` and ``llmens report`` all say the same dollars."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from llmens_core.costs import cost_summary
from llmens_core.llm.simulator import SimConfig
from streams.cli import app
from streams.harness.stack import LocalStack
from tests.streams.pipeline_kit import demo_events, expected_keys, fast_sim

pytestmark = pytest.mark.integration


def _cost_total(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    return {s.labels["llm"]: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
            if s.name == "llmens_llm_cost_total"}


def test_worker_exports_llm_cost_total_and_report_prices_decisions(tmp_path, broker, topic_prefix):
    sim = fast_sim()
    prices = {m.name: (m.price_in_per_1k, m.price_out_per_1k) for m in SimConfig.model_validate(sim).models}
    assert len(prices) == 5 and all(pin > 0 for pin, _ in prices.values())
    events, _ = demo_events(limit=40)
    with LocalStack(tmp_path, broker=broker, topic_prefix=topic_prefix, sim_config=sim,
                    endpoint_overrides={"max_concurrency": 64, "timeout_s": 5}) as s:
        s.publish(events)
        s.decisions(expected_keys(events), timeout_s=60)
        port = s.worker_port(0)
        counters = s.worker_json(0, "/counters")
        cost = _cost_total(port)
        res = CliRunner().invoke(app, ["report", "--url", f"http://127.0.0.1:{port}/model",
                                       "--out", str(tmp_path / "report")])
        later = _cost_total(port)
    llm, decisions = counters["llm"], counters["worker"]["decisions"]
    assert set(cost) == set(prices) and decisions >= len(expected_keys(events))
    for name, (pin, pout) in prices.items():
        c = llm[name]
        assert c["tokens_in"] > 0 and c["tokens_out"] > 0
        want = c["tokens_in"] / 1000 * pin + c["tokens_out"] / 1000 * pout
        assert cost[name] == pytest.approx(want, rel=1e-9) == pytest.approx(c["cost_usd"], rel=1e-9)
        assert later[name] >= cost[name]  # a counter: never goes down between scrapes
    summary = cost_summary(llm, decisions)
    assert summary["usd"] == pytest.approx(sum(cost.values()), rel=1e-9)
    assert summary["usd_per_1k_decisions"] == pytest.approx(1000 * sum(cost.values()) / decisions, rel=1e-9)
    assert res.exit_code == 0, res.output
    assert "per 1,000 decisions" in res.output and "full fan-out" in res.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>LLM cost</h2>" in page and all(f"<td>{n}</td>" in page for n in prices)
