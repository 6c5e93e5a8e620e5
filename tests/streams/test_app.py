"""create_app wires the parts on a guarded transport; background tasks survive a broker outage."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from streams.app import create_app, faust_settings, restart_on_error
from streams.faust_ext.transport import GuardedTransport
from streams.settings import Settings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("LLMENS_")]:
        monkeypatch.delenv(name)


def _settings(tmp_path, **kafka) -> Settings:
    llm = {"name": "a", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "a"}
    return Settings(llms=[llm], data_dir=tmp_path / "data", kafka={"bootstrap": "127.0.0.1:1", **kafka})


@pytest.mark.parametrize("guard", [True, False])
def test_create_app_hands_faust_the_guarded_transport_and_registers_every_part(tmp_path, guard):
    app, worker = create_app(_settings(tmp_path, commit_guard=guard))
    assert isinstance(app.transport, GuardedTransport) and app.transport.commit_guard is guard
    assert app.transport.tracked_topics == {"llmens.product-updates", "llmens.attribute-feedback"}
    assert {a.name.rsplit(".", 1)[-1] for a in app.agents.values()} == {"decide_products", "apply_feedback"}
    assert {"/metrics", "/healthz", "/model", "/counters", "/feedback", "/debug/tasks"} <= {
        p.rstrip("/") for p in app.web.views}
    worker.metrics.close()


def test_the_local_profile_and_the_tansu_workarounds_are_separate_settings(tmp_path):
    production = faust_settings(_settings(tmp_path))
    local = faust_settings(_settings(tmp_path, embedded=True))
    tansu = faust_settings(_settings(tmp_path, embedded=True, tansu=True))
    assert "broker_session_timeout" not in production and production["consumer_metadata_max_age_ms"] == 30_000
    assert local["broker_session_timeout"] == 2.0 and "broker_request_timeout" not in local
    assert tansu["broker_request_timeout"] == 10.0


async def test_a_failing_background_task_is_restarted_with_backoff_not_left_dead():
    counters: dict = defaultdict(float)
    calls = []

    async def flaky() -> None:
        calls.append(len(calls))
        if len(calls) < 3:
            raise ConnectionError("broker down")
        raise asyncio.CancelledError  # the worker stops: cancellation is not swallowed

    with pytest.raises(asyncio.CancelledError):
        await restart_on_error("model reader", counters, flaky, backoff_s=0.01)
    assert calls == [0, 1, 2] and counters["model_reader_restarts"] == 2


@pytest.mark.parametrize(("replication", "min_isr"), [(1, None), (3, "2")])
def test_writes_wait_for_all_in_sync_replicas_and_replicated_topics_need_two(tmp_path, replication, min_isr):
    """acks=all with idempotence for faust's producer (faust asks for it only inside transactions), and
    ``min.insync.replicas`` on the topics and the table changelog the worker creates on a cluster."""
    from streams.topics import topic_specs

    st = _settings(tmp_path)
    st.topics.replication = replication
    app, worker = create_app(st)
    extra = app.producer._settings_extra()
    assert extra["acks"] == "all" and extra["enable_idempotence"] is True
    assert faust_settings(st)["producer_acks"] == -1
    assert {s.config.get("min.insync.replicas") for s in topic_specs(st)} == {min_isr}
    changelog = next(iter(app.tables.values())).changelog_topic
    assert changelog.config.get("min.insync.replicas") == min_isr
    assert (changelog.replicas or app.conf.topic_replication_factor) == replication  # as faust creates it
    worker.metrics.close()
