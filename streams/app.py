"""The llmens faust application: product updates in, attribute decisions out, DS models learned on the way.

Topology (one consumer group; everything keyed by product_id except the learner, keyed by attribute)::

    product-updates ─► [decide]: gateway (all LLMs at once) ─► posterior under the current DS model
                          │  state: `products` table (RocksDB): latest version + its decisions
                          ├─► product-attributes  (every decision; key product_id)
                          ├─► attribute-review    (decisions below the confidence threshold)
                          ├─► llm-votes           (one record per product version: all its votes)
                          ├─► dead-letter         (bad input, or every LLM failed after retries)
                          └─► ds-stats (key attribute): statistics deltas, flushed in mini-batches
    ds-stats ─► [learn]: online EM per attribute ─► ds-model (key attribute) ─► every worker's registry
             └► (student on) each attribute's text classifier ─► student-model (key attribute) ─► every worker

This module only wires the parts: :mod:`streams.decider` (the decision path), :mod:`streams.outputs`,
:mod:`streams.feedback`, :mod:`streams.watchdog`, :mod:`streams.views`, :mod:`streams.learner` and
:mod:`streams.models`, on faust extended by :mod:`streams.faust_ext`. Why labeler and aggregator are one
agent, and the other design choices: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streams.decider import ProductDecider
from streams.faust_ext.commit_guard import mark_finished
from streams.faust_ext.tansu import LOCAL_BROKER_FAUST_SETTINGS, TANSU_FAUST_SETTINGS
from streams.faust_ext.transport import install_transport
from streams.feedback import install_feedback
from streams.learner import run_learner
from streams.models import read_models_forever
from streams.outputs import OutputChannels, Outputs
from streams.reconfig import install_reconfig
from streams.settings import Settings
from streams.state import TableStore
from streams.students import StudentLearner
from streams.topics import STUDENT_MAX_BYTES, replication_config
from streams.views import install_views
from streams.watchdog import StallWatchdog
from streams.worker import Worker

log = logging.getLogger("llmens.worker")

__all__ = ["Worker", "create_app", "faust_settings"]


def faust_settings(st: Settings) -> dict[str, Any]:
    """faust's settings for ``st``: the broker, RocksDB tables, web, producer batching, broker profile."""
    extra: dict[str, Any] = {}
    if st.kafka.embedded:
        extra.update(LOCAL_BROKER_FAUST_SETTINGS)
    if st.kafka.tansu:
        extra.update(TANSU_FAUST_SETTINGS)
    base = dict(
        broker=f"kafka://{st.kafka.bootstrap}", store="rocksdb://", datadir=str(st.data_dir / "faust"),
        topic_partitions=st.topics.partitions, topic_replication_factor=st.topics.replication,
        web_enabled=True, web_bind=st.web_host, web_port=st.web_port, web_host=st.web_host,
        stream_wait_empty=False,
        producer_acks=-1,  # acks=all: with min.insync.replicas=2 a decision survives the loss of a broker
        # Every product writes one table record and several output records; faust's 16 KiB batches made
        # the producer the bottleneck and starved offset commits (they wait for the producer to drain).
        producer_max_batch_size=256 * 1024, producer_linger=0.005,
        # A group that rebalanced while a restarted broker served no topics yet has no partition assigned
        # to anyone until metadata changes are seen: faust's 5 min default left the drill idle for 5 min.
        consumer_metadata_max_age_ms=30_000)
    return {**base, **extra}


def _adaptive_policy(st: Settings) -> Any:
    if not st.adaptive.enabled:
        return None
    from llmens_core.adaptive import AdaptivePolicy

    a = st.adaptive
    return AdaptivePolicy(st.llms, confidence_target=a.confidence_target, exploration_share=a.exploration_share,
                          first_stage=a.first_stage, max_gain=a.max_gain, warmup_items=a.warmup_items)


def create_app(settings: Settings) -> tuple[faust.App, Worker]:
    """Build the faust app for ``settings``; returns it with the :class:`Worker` state it closes over."""
    st = settings
    st.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(st.kafka.app_id, **faust_settings(st))
    install_transport(app, commit_guard=st.kafka.commit_guard, tansu=st.kafka.tansu,
                      tracked_topics={st.topic("product_updates"), st.topic("attribute_feedback")})
    w = Worker(st)
    raw, P = {"key_serializer": "raw", "value_serializer": "raw"}, st.topics.partitions

    def topic(name: str, partitions: int = P) -> faust.TopicT:
        return app.topic(st.topic(name), partitions=partitions, **raw)

    updates = topic("product_updates")
    channels = OutputChannels(decisions=topic("product_attributes"), review=topic("attribute_review"),
                              votes=topic("llm_votes"), dead_letter=topic("dead_letter"),
                              stats=topic("ds_stats", st.topics.model_partitions))
    store = TableStore(app.Table("products", partitions=P, key_type=str,  # changelog-backed RocksDB
                                 extra_topic_configs=replication_config(st), options=st.state.rocksdb_options()))
    outputs = Outputs(channels, w.metrics, w.counters, st.aggregation.review_below)
    policy = _adaptive_policy(st)
    decider = ProductDecider(w, outputs, store, claim=lambda msg: app.consumer.claim(msg.tp), policy=policy)
    _install_decider(app, decider, updates)
    _install_learning(app, w, decider)
    watchdog = StallWatchdog(w, updates.get_topic_name())

    @app.task
    async def sample_consumer_lag():  # started with the worker: building the app does no I/O
        w.metrics.attach_lag(st.kafka.bootstrap, [st.kafka.app_id], refresh_s=st.lag_refresh_seconds)

    @app.timer(interval=5.0)
    async def redeliver_stalled_partitions():
        try:
            await watchdog.check(app.consumer)
        except Exception as exc:  # noqa: BLE001 - a crashed timer stops the whole worker (seen in the drill)
            w.counters["watchdog_errors"] += 1
            log.warning("stall watchdog: %s: %s (next check in 5 s)", type(exc).__name__, exc)

    @app.on_before_shutdown.connect
    async def close_worker(app, **kwargs):
        await w.close()

    install_views(app, w)
    install_feedback(app, w, st, store, outputs)  # gold labels: learner + agreement scores (/feedback)
    install_reconfig(app, w, st, policy)  # LLM list re-read from LLMENS_CONFIG without a restart
    app.llmens_worker = w  # type: ignore[attr-defined]
    return app, w


def _install_decider(app: faust.App, decider: ProductDecider, updates: faust.TopicT) -> None:
    @app.agent(updates, concurrency=decider.w.settings.concurrency)
    async def decide_products(stream):
        await decider.w.registry.ready.wait()  # take no event before the DS models are read
        if decider.w.students is not None:
            await decider.w.students.ready.wait()  # nor before the latest students are (issue 33)
        async for event in stream.events():
            finished = True
            try:
                finished = await decider.handle(event)
            except Exception as exc:  # noqa: BLE001 - one bad product must not stop the stream
                msg = event.message
                log.exception("unexpected error on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await decider.outputs.dead_letter(event.value, f"internal error: {type(exc).__name__}: {exc}",
                                                  event.message, "internal")
            if finished:
                mark_finished(event.message)

    @app.task
    async def drop_faust_monitor():
        """Our Prometheus metrics replace faust's in-memory Monitor sensor (~3% of the main thread, py-spy)."""
        with contextlib.suppress(KeyError):
            app.sensors.remove(app.monitor)


async def restart_on_error(name: str, counters: dict, run: Callable[[], Awaitable[None]],
                           backoff_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
    """Run ``run()`` forever: a broker outage must not crash the worker (faust stops on a crashed task)."""
    delay = backoff_s
    while True:
        try:
            await run()
            delay = backoff_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged, counted and retried
            counters[f"{name.replace(' ', '_')}_restarts"] += 1
            log.warning("%s stopped (%s: %s); restarting in %.0f s", name, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


def _install_learning(app: faust.App, w: Worker, decider: ProductDecider) -> None:
    st = w.settings

    def on_model_published(attribute: str, summary: dict) -> None:
        w.metrics.events_out.labels(st.topic("ds_model")).inc()
        w.counters["model_versions"] += 1
        w.metrics.update_model_metrics(attribute, summary)

    def on_student_published(attribute: str, summary: dict) -> None:
        w.metrics.events_out.labels(st.topic("student_model")).inc()
        w.metrics.update_student_metrics(attribute, summary)

    def students() -> StudentLearner | None:  # a new learner's copies start from the registry's students
        return None if w.students is None else StudentLearner(
            w.students, st.topic("student_model"), publish_seconds=st.student.publish_seconds, counters=w.counters,
            on_publish=on_student_published)

    @app.task
    async def learn():
        await w.registry.ready.wait()
        if w.students is not None:
            await w.students.ready.wait()
        await restart_on_error("learner", w.counters, lambda: run_learner(
            w.registry, st.kafka.bootstrap, st.topic("ds_stats"), f"{st.kafka.app_id}-learner", st.topic("ds_model"),
            embedded=st.kafka.embedded, counters=w.counters, on_publish=on_model_published, students=students()))

    @app.task
    async def load_models():
        await restart_on_error("model reader", w.counters, lambda: read_models_forever(
            w.registry, st.kafka.bootstrap, st.topic("ds_model")))

    if w.students is not None:
        @app.task
        async def load_students():
            await restart_on_error("student reader", w.counters, lambda: read_models_forever(
                w.students, st.kafka.bootstrap, st.topic("student_model"), max_record_bytes=STUDENT_MAX_BYTES))

    @app.timer(interval=st.aggregation.stats_flush_seconds)
    async def flush_all_stats():
        for attribute in decider.pending_attributes():
            await decider.flush_stats(attribute)

    @app.timer(interval=st.aggregation.revise_seconds)
    async def revise_recent_decisions():
        await decider.revise()
