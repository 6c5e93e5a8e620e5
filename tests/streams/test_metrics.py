"""Prometheus rendering of the worker metrics, the gateway collector and the consumer-lag collector."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmens_core.llm.client import EndpointCounters
from streams.metrics import WorkerMetrics, render_metrics, update_model_metrics


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_worker_metrics_render():
    m = WorkerMetrics()
    m.events_in.labels("llmens.product-updates").inc(3)
    m.events_out.labels("llmens.product-attributes").inc(5)
    m.dead_letters.labels("invalid").inc()
    m.superseded.inc(2)
    m.observe_decision({"attribute": "color_family", "reason": "complete", "confidence": 0.93})
    m.observe_decision({"attribute": "color_family", "reason": "deadline", "confidence": 0.42})
    summary = {"version": 7, "classes": ["red", "blue"], "workers": ["a", "b"],
               "accuracy": {"a": 0.91, "b": 0.6}, "weight": {"a": 2.3, "b": 0.4}}
    update_model_metrics("color_family", summary, m)

    c = EndpointCounters()
    c.requests, c.successes, c.failures, c.retries = 10, 8, 1, 2
    c.errors = {"http_429": 2, "timeout": 1}
    c.breaker_state = "half_open"
    c.tokens_in, c.tokens_out, c.cost_usd = 1200, 300, 0.0125
    c.declined = {"refusal": 3, "safety": 1}
    for v in (0.02, 0.2, 0.2, 3.0):
        c.latency.observe(v)
    m.attach_gateway(lambda: {"sim-large": c})

    body, ctype = render_metrics(m.registry)
    assert ctype.startswith("text/plain")
    s = _samples(body)
    assert s[("llmens_events_in_total", (("topic", "llmens.product-updates"),))] == 3
    assert s[("llmens_events_out_total", (("topic", "llmens.product-attributes"),))] == 5
    assert s[("llmens_dead_letters_total", (("reason", "invalid"),))] == 1
    assert s[("llmens_superseded_total", ())] == 2
    assert s[("llmens_decisions_total", (("attribute", "color_family"), ("reason", "deadline")))] == 1
    assert s[("llmens_decision_confidence_count", (("attribute", "color_family"),))] == 2
    assert s[("llmens_decision_confidence_bucket", (("attribute", "color_family"), ("le", "0.5")))] == 1
    assert s[("llmens_llm_accuracy", (("attribute", "color_family"), ("llm", "a")))] == pytest.approx(0.91)
    assert s[("llmens_llm_weight", (("attribute", "color_family"), ("llm", "b")))] == pytest.approx(0.4)
    assert s[("llmens_model_version", (("attribute", "color_family"),))] == 7
    lab = (("llm", "sim-large"),)
    assert s[("llmens_llm_request_seconds_count", lab)] == 4
    assert s[("llmens_llm_request_seconds_sum", lab)] == pytest.approx(3.42)
    assert s[("llmens_llm_request_seconds_bucket", (("le", "0.25"), ("llm", "sim-large")))] == 3
    assert s[("llmens_llm_request_seconds_bucket", (("le", "+Inf"), ("llm", "sim-large")))] == 4
    assert s[("llmens_llm_errors_total", (("kind", "http_429"), ("llm", "sim-large")))] == 2
    assert s[("llmens_llm_retries_total", lab)] == 2
    assert s[("llmens_llm_breaker_open", lab)] == 0.5
    assert s[("llmens_llm_tokens_total", (("direction", "in"), ("llm", "sim-large")))] == 1200
    assert s[("llmens_llm_cost_total", lab)] == pytest.approx(0.0125)
    assert s[("llmens_llm_declined_total", (("llm", "sim-large"), ("reason", "refusal")))] == 3
    assert s[("llmens_llm_declined_total", (("llm", "sim-large"), ("reason", "safety")))] == 1
    # counters keep counting across scrapes (cumulative, read at scrape time)
    c.retries = 5
    assert _samples(render_metrics(m.registry)[0])[("llmens_llm_retries_total", lab)] == 5


def test_dead_letter_reasons_are_exported_at_zero_before_the_first_one():
    """The dead-letter alert uses increase(): a series born at 1 would hide a worker's first dead letter."""
    from streams.metrics import DEAD_LETTER_REASONS

    samples = _samples(render_metrics(WorkerMetrics().registry)[0])
    zeros = {dict(labels)["reason"] for (name, labels), v in samples.items()
             if name == "llmens_dead_letters_total" and v == 0}
    assert zeros == set(DEAD_LETTER_REASONS)


def test_two_workers_have_separate_registries():
    a, b = WorkerMetrics(), WorkerMetrics()
    a.superseded.inc()
    assert _samples(a.render()[0])[("llmens_superseded_total", ())] == 1
    assert _samples(b.render()[0])[("llmens_superseded_total", ())] == 0


@pytest.mark.integration
def test_lag_collector(broker, topic_prefix):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = f"{topic_prefix}in", f"{topic_prefix}g"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # keep a reference until the future is done
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for i in range(120):
        p.produce(topic, value=b"x", partition=i % 2)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 20), TopicPartition(topic, 1, 60)], asynchronous=False)
    c.close()

    m = WorkerMetrics()
    col = m.attach_lag(broker.bootstrap, [group], refresh_s=0.5)
    t0 = time.monotonic()
    render_metrics(m.registry)  # never waits on Kafka
    assert time.monotonic() - t0 < 0.5
    col.wait(10)
    s = _samples(render_metrics(m.registry)[0])
    key = lambda part: (("consumergroup", group), ("partition", str(part)), ("topic", topic))  # noqa: E731
    assert s[("llmens_kafka_consumergroup_lag", key(0))] == 40
    assert s[("llmens_kafka_consumergroup_lag", key(1))] == 0
    assert s[("llmens_kafka_consumergroup_current_offset", key(0))] == 20
    assert s[("llmens_kafka_topic_partition_current_offset", (("partition", "0"), ("topic", topic)))] == 60
    m.close()


async def test_llm_cost_total_from_real_gateway_and_simulator():
    """``llmens_llm_cost_total{llm}``: the simulator's usage over HTTP x each LLM's configured price, cumulative."""
    from importlib import resources

    import orjson

    from llmens_core.events import ProductUpdate
    from llmens_core.llm.gateway import Gateway
    from llmens_core.llm.simulator import SimConfig, endpoints_for, start_simulator
    from llmens_core.schema import AttributeSchema

    prices = {"dear": (0.003, 0.015), "cheap": (0.0001, 0.0002), "free": (0.0, 0.0)}
    cfg = SimConfig.model_validate({
        "mode": "confusion", "seed": 3, "defaults": {"latency_ms": {"mean": 0}, "faults": {}},
        "models": [{"name": n, "accuracy": 0.9, "price_in_per_1k": i, "price_out_per_1k": o}
                   for n, (i, o) in prices.items()]})
    raw = resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes()
    products = [orjson.loads(x) for x in raw.splitlines() if x.strip()][:30]
    runner, port = await start_simulator(cfg)
    try:
        eps = endpoints_for(cfg, f"http://127.0.0.1:{port}/v1", timeout_s=10, max_retries=1)
        assert {e.name: (e.price_in_per_1k, e.price_out_per_1k) for e in eps} == prices
        m = WorkerMetrics()
        async with Gateway(eps, AttributeSchema.load()) as gw:
            m.attach_gateway(gw)
            spent: dict[str, float] = {n: 0.0 for n in prices}
            scraped = []
            for batch in (products[:15], products[15:]):
                for p in batch:
                    up = ProductUpdate(product_id=p["product_id"], version=1, title=p["title"],
                                       description=p.get("description"), category=p.get("category"))
                    for v in await gw.label(up, sorted(p["attributes"]) or ["gender"]):
                        assert v.error is None, v
                        spent[v.llm] += v.cost_usd
                scraped.append(_samples(render_metrics(m.registry)[0]))
    finally:
        await runner.cleanup()
    first, last = scraped
    for n, (pin, pout) in prices.items():
        lab = (("llm", n),)
        tin = last[("llmens_llm_tokens_total", (("direction", "in"), ("llm", n)))]
        tout = last[("llmens_llm_tokens_total", (("direction", "out"), ("llm", n)))]
        assert tin > 30 * 50 and tout > 30  # usage measured from the simulator's answers, not estimated
        want = tin / 1000 * pin + tout / 1000 * pout
        assert last[("llmens_llm_cost_total", lab)] == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert last[("llmens_llm_cost_total", lab)] == pytest.approx(spent[n], rel=1e-9, abs=1e-12)  # = the votes'
        assert 0 < first[("llmens_llm_cost_total", lab)] < last[("llmens_llm_cost_total", lab)] or n == "free"
    assert last[("llmens_llm_cost_total", (("llm", "free"),))] == 0.0
    assert last[("llmens_llm_cost_total", (("llm", "dear"),))] > 20 * last[("llmens_llm_cost_total", (("llm", "cheap"),))]
