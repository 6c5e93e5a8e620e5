"""The llmens faust application: product updates in, attribute decisions out, models learned on the way.

Topology (one consumer group; everything keyed by product_id except the learner, keyed by attribute)::

    product-updates ─► [decide]: gateway (all LLMs at once) ─► posterior under the current model
                          │  state: `products` table (RocksDB): latest version + its decisions
                          ├─► product-attributes  (every decision; key product_id)
                          ├─► attribute-review    (decisions below the confidence threshold)
                          ├─► llm-votes           (one record per product version: all its votes)
                          ├─► dead-letter         (bad input, or every LLM failed after retries)
                          └─► ds-stats (key attribute): statistics deltas, flushed in mini-batches
    ds-stats ─► [learn]: online EM per attribute ─► ds-model (key attribute) ─► every worker's registry

Why the labeler and aggregator are one agent (the starting design had two, joined by ``llm-votes``):
the gateway already gathers a product's votes from every LLM under one deadline, so pending votes live
in memory for at most that deadline; a crash before the decision is covered by at-least-once input
(the offset is committed only after the decision is produced) and by the RocksDB response cache
(redelivered products cost no LLM calls). A second hop would double broker traffic for nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

import faust
import orjson

from llmens_core.decisions import RevisionWindow, StatsAccumulator, all_failed, decide, votes_by_attribute
from llmens_core.events import AttributeDecision, DeadLetter, EventError, ProductUpdate
from llmens_core.llm.cache import ResponseCache
from llmens_core.llm.gateway import Gateway
from llmens_core.schema import AttributeSchema
from streams.commit_guard import heal_held_heads, install_commit_guard, mark_finished
from streams.embedded import EMBEDDED_FAUST_SETTINGS, patch_faust_highwaters
from streams.learner import run_learner
from streams.metrics import WorkerMetrics
from streams.models import ModelRegistry, read_models_forever
from streams.settings import Settings

log = logging.getLogger("llmens.worker")

__all__ = ["Worker", "create_app"]


class Worker:
    """The state one worker process holds besides faust's tables: gateway, models, counters."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.schema = AttributeSchema.load(settings.attributes_file)
        self.metrics = WorkerMetrics()
        self.registry = ModelRegistry(self.schema, settings.llms, **settings.aggregation.model_kwargs())
        self.registry.on_update = self.metrics.update_model_metrics
        self.gateway: Gateway | None = None
        self.stats = StatsAccumulator(settings.aggregation.stats_flush_items)
        self.revisions = RevisionWindow(settings.aggregation.revision_window)
        self.counters: dict[str, float] = defaultdict(float)
        self.latest_seen: dict[str, int] = {}
        self.deciding: dict[tuple[str, int], asyncio.Future] = {}
        """(product, version) being decided here: a redelivered copy waits for it, then re-emits its state."""
        self.inflight: collections.Counter = collections.Counter()
        """Products in flight per stage (diagnostics for a stalled worker, served by /counters)."""
        self.on_decision = None  # optional hook (metrics)

    async def start_gateway(self) -> Gateway:
        if self.gateway is None:
            cache_dir = self.settings.data_dir / "response-cache"
            cache = ResponseCache(cache_dir)
            self.gateway = Gateway(self.settings.llms, self.schema, cache=cache,
                                   product_deadline_s=self.settings.product_deadline_s)
            await self.gateway.start()
            self.metrics.attach_gateway(self.gateway)
        return self.gateway

    @contextlib.contextmanager
    def stage(self, name: str):
        self.inflight[name] += 1
        try:
            yield
        finally:
            self.inflight[name] -= 1

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
            if self.gateway.cache is not None:
                self.gateway.cache.close()
            self.gateway = None
        self.metrics.close()


def create_app(settings: Settings) -> tuple[faust.App, Worker]:
    """Build the faust app for ``settings``; returns it with the :class:`Worker` state it closes over."""
    st = settings
    if st.kafka.commit_guard:
        install_commit_guard(
            tracked_topics={st.topic("product_updates"), st.topic("attribute_feedback")})
    extra: dict[str, Any] = {}
    if st.kafka.embedded:
        extra.update(EMBEDDED_FAUST_SETTINGS)
        patch_faust_highwaters(st.kafka.bootstrap)
    st.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        st.kafka.app_id,
        broker=f"kafka://{st.kafka.bootstrap}",
        store="rocksdb://",
        datadir=str(st.data_dir / "faust"),
        topic_partitions=st.topics.partitions,
        topic_replication_factor=st.topics.replication,
        web_enabled=True,
        web_bind=st.web_host,
        web_port=st.web_port,
        web_host=st.web_host,
        stream_wait_empty=False,
        # Every product writes one table record and several output records; faust's 16 KiB batches made
        # the producer the bottleneck and starved offset commits (they wait for the producer to drain).
        producer_max_batch_size=256 * 1024,
        producer_linger=0.005,
        **extra,
    )
    w = Worker(st)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    P, MP = st.topics.partitions, st.topics.model_partitions
    t_updates = app.topic(st.topic("product_updates"), partitions=P, **raw)
    t_votes = app.topic(st.topic("llm_votes"), partitions=P, **raw)
    t_out = app.topic(st.topic("product_attributes"), partitions=P, **raw)
    t_review = app.topic(st.topic("attribute_review"), partitions=P, **raw)
    t_dlq = app.topic(st.topic("dead_letter"), partitions=P, **raw)
    t_stats = app.topic(st.topic("ds_stats"), partitions=MP, **raw)
    t_model = app.topic(st.topic("ds_model"), partitions=MP, **raw)
    # product_id -> {"version": v, "decisions": {attribute: AttributeDecision JSON}}; changelog-backed.
    products = app.Table("products", partitions=P, key_type=str)
    review_below = st.aggregation.review_below
    events_in = w.metrics.events_in.labels(t_updates.get_topic_name())
    w.metrics.attach_lag(st.kafka.bootstrap, [st.kafka.app_id])

    m = w.metrics
    out_topics = {t: m.events_out.labels(t.get_topic_name()) for t in (t_out, t_review, t_votes, t_dlq, t_stats,
                                                                      t_model)}

    async def dead_letter(raw_value: bytes | None, reason: str, msg: Any, kind: str = "invalid") -> None:
        w.counters["dead_letters"] += 1
        m.dead_letters.labels(kind).inc()
        out_topics[t_dlq].inc()
        dl = DeadLetter.wrap(raw_value, reason, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             key=msg.key)
        await t_dlq.send(key=msg.key, value=dl.to_bytes())
        log.warning("dead-letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)

    async def emit(decision: AttributeDecision) -> None:
        body = decision.to_bytes()
        key = decision.product_id.encode()
        await t_out.send(key=key, value=body)
        out_topics[t_out].inc()
        if decision.confidence < review_below:
            await t_review.send(key=key, value=body)
            out_topics[t_review].inc()
        w.counters["decisions"] += 1
        m.observe_decision(decision)

    async def save_state(event: faust.types.EventT, pid: str, state: dict) -> None:
        """Store a product's decisions and wait until its changelog record is delivered.

        Only then are the decisions emitted: a worker killed after its outputs were delivered must have
        delivered the state too, so the redelivered event re-emits the stored decisions instead of deciding
        again under a newer model (faust's ``table[key] = value`` buffers the changelog record with
        ``send_soon``, which a SIGKILL loses while the awaited outputs were already out).
        """
        products.data[pid] = state
        delivered = await products.changelog_topic.send(
            key=pid, value=state, partition=event.message.partition, key_serializer=products.key_serializer,
            value_serializer=products.value_serializer, callback=products._on_changelog_sent)
        await delivered

    async def flush_stats(attribute: str) -> None:
        stats = w.stats.take(attribute, w.registry.get(attribute))
        if stats is not None and stats.n_items > 0:
            payload = orjson.dumps({"attribute": attribute, "stats": stats.to_dict()})
            await t_stats.send(key=attribute.encode(), value=payload)
            out_topics[t_stats].inc()
            w.counters["stats_sent"] += 1

    policy = None
    if st.adaptive.enabled:
        from llmens_core.adaptive import AdaptivePolicy, ask_in_stages

        policy = AdaptivePolicy(st.llms, confidence_target=st.adaptive.confidence_target,
                                exploration_share=st.adaptive.exploration_share,
                                first_stage=st.adaptive.first_stage, max_gain=st.adaptive.max_gain)

    async def ask(gw: Gateway, product: ProductUpdate, attrs: list[str]):
        """All LLMs at once, or (adaptive) stage by stage until asking the rest could not pay off.

        Returns the votes and, for adaptive runs, why asking stopped ("explore", "confident", "exhausted").
        Later stages ask only the attributes still unsettled.
        """
        if policy is None:
            return await gw.label(product, attrs), None
        models = {a: w.registry.get(a) for a in attrs}
        votes, _, _, reason = await ask_in_stages(policy, lambda todo, llms: gw.label(product, todo, llms=llms),
                                                  product.product_id, attrs, models, rule=st.adaptive.rule)
        return votes, reason

    async def label_with_retries(product: ProductUpdate, attrs: list[str]):
        gw = await w.start_gateway()
        for attempt in range(st.all_failed_retries + 1):
            votes, stop_reason = await ask(gw, product, attrs)
            if not all_failed(votes):
                return votes, None, stop_reason
            w.counters["all_failed_attempts"] += 1
            if attempt < st.all_failed_retries:
                # not before a breaker lets a probe through: retrying into open breakers only used up the
                # attempts (seen under CPU overload: timeouts opened every breaker, products were dead-lettered)
                await asyncio.sleep(max(st.all_failed_backoff_s * (2**attempt), gw.available_in() + 0.05))
        errors = sorted({f"{v.llm}: {v.error}" for v in votes})
        failure = f"every LLM failed after {st.all_failed_retries + 1} attempts: " + "; ".join(errors)
        return votes, failure, None

    async def handle(event: faust.types.EventT) -> bool:
        """Decide (or re-emit, or dead-letter) one product event; False if it was abandoned to a new owner."""
        started = time.perf_counter()
        msg = event.message
        w.counters["events_in"] += 1
        events_in.inc()
        try:
            product = ProductUpdate.from_bytes(event.value, max_bytes=st.max_event_bytes)
        except EventError as exc:
            reason = str(exc)
            await dead_letter(event.value, reason, msg, "too_large" if reason.startswith("event too large")
                              else "invalid")
            return True
        attrs, unknown = w.schema.requested(product.attributes, product.category)
        if unknown:
            await dead_letter(event.value, f"attributes: unknown attribute(s) {unknown}", msg,
                              "unknown_attribute")
            return True
        if not attrs:
            await dead_letter(event.value, f"attributes: none requested and category {product.category!r} "
                              "has no default attributes", msg, "no_attributes")
            return True
        pid, version = product.product_id, product.version
        running = w.deciding.get((pid, version))
        if running is not None:
            # redelivered (a rebalance gave the partition back) while the first copy is still deciding:
            # deciding twice could give two values under two models, so wait and re-emit what it stored
            w.counters["waited_for_same_version"] += 1
            with w.stage("wait_same_version"):
                await asyncio.shield(running)
        state = products.get(pid)
        if state is not None:
            if version < state["version"]:
                w.counters["superseded"] += 1
                m.superseded.inc()
                return True
            if version == state["version"] and set(attrs) <= set(state["decisions"]):
                w.counters["redelivered"] += 1  # same (product, version): the same decisions again
                for a in attrs:
                    await emit(AttributeDecision.model_validate(state["decisions"][a]))
                return True
        if w.latest_seen.get(pid, -1) > version:
            w.counters["superseded"] += 1
            m.superseded.inc()
            return True
        w.latest_seen[pid] = version
        done = w.deciding[(pid, version)] = asyncio.get_running_loop().create_future()
        try:
            return await decide_and_emit(event, product, attrs, state, started)
        finally:
            if w.deciding.get((pid, version)) is done:
                del w.deciding[(pid, version)]
            done.set_result(None)
            if w.latest_seen.get(pid) == version:
                del w.latest_seen[pid]

    async def decide_and_emit(event: faust.types.EventT, product: ProductUpdate, attrs: list[str],
                              state: dict | None, started: float) -> bool:
        msg = event.message
        pid, version = product.product_id, product.version
        with w.stage("wait_models"):
            await w.registry.ready.wait()
        t_llm = time.perf_counter()
        with w.stage("ask_llms"):
            votes, failure, stop_reason = await label_with_retries(product, attrs)
        if stop_reason is not None:
            w.counters[f"adaptive_{stop_reason}"] += 1
        llm_seconds = time.perf_counter() - t_llm
        if state is not None and state["version"] < version:
            w.revisions.drop_product(pid)
        if w.latest_seen.get(pid, -1) > version:  # a newer version arrived while we waited on LLMs
            w.counters["superseded"] += 1
            m.superseded.inc()
            return True
        if failure is not None:
            await dead_letter(event.value, failure, msg, "all_llms_failed")
            return True
        # Decide every attribute before the first await: a decision's processing time is our work, not
        # the event loop's queue (measured: awaiting the votes record first put p99 overhead at ~400 ms).
        decisions, to_flush = [], []
        for attribute, by_llm in votes_by_attribute(votes).items():
            decision, _ = decide(pid, version, attribute, by_llm, w.registry.get(attribute),
                                 llm_seconds=llm_seconds, started=started,
                                 reason="adaptive" if policy is not None else "complete", stopped=stop_reason)
            decisions.append(decision)
            if w.stats.add(attribute, pid, by_llm):
                to_flush.append(attribute)
        if msg.tp not in app.consumer.assignment():
            # revoked while we waited on LLMs: the partition's new owner decides it from the committed offset
            w.counters["abandoned_revoked"] += 1
            return False
        with w.stage("save_state"):
            await save_state(event, pid, {"version": version,
                                          "decisions": {d.attribute: d.model_dump(mode="json") for d in decisions}})
        with w.stage("emit"):
            for decision in decisions:
                await emit(decision)
                w.revisions.add(decision)
            await t_votes.send(key=pid.encode(), value=orjson.dumps([v.model_dump(mode="json") for v in votes]))
            out_topics[t_votes].inc()
            for attribute in to_flush:
                await flush_stats(attribute)
        return True

    @app.agent(t_updates, concurrency=st.concurrency)
    async def decide_products(stream):
        await w.registry.ready.wait()  # take no event before the models are read: it could not be decided
        async for event in stream.events():
            finished = True
            try:
                finished = await handle(event)
            except Exception as exc:  # noqa: BLE001 - one bad product must not stop the stream
                log.exception("unexpected error on %s[%d]@%d", event.message.topic, event.message.partition,
                              event.message.offset)
                await dead_letter(event.value, f"internal error: {type(exc).__name__}: {exc}", event.message,
                                  "internal")
            if finished:
                mark_finished(event.message)

    def on_model_published(attribute: str, summary: dict) -> None:
        out_topics[t_model].inc()
        w.counters["model_versions"] += 1
        m.update_model_metrics(attribute, summary)

    @app.task
    async def drop_faust_monitor():
        """Our Prometheus metrics replace faust's in-memory Monitor sensor, whose per-event and per-send
        bookkeeping cost ~3% of the worker's main thread (py-spy)."""
        with contextlib.suppress(KeyError):
            app.sensors.remove(app.monitor)

    @app.task
    async def learn():
        await w.registry.ready.wait()
        await run_learner(w.registry, st.kafka.bootstrap, st.topic("ds_stats"), f"{st.kafka.app_id}-learner",
                          st.topic("ds_model"), embedded=st.kafka.embedded, counters=w.counters,
                          on_publish=on_model_published)

    @app.timer(interval=st.aggregation.stats_flush_seconds)
    async def flush_all_stats():
        for attribute in w.stats.attributes():
            await flush_stats(attribute)

    @app.timer(interval=st.aggregation.revise_seconds)
    async def revise_recent_decisions():
        """Re-emit recent decisions that a newer model flips (revision + 1)."""
        for attribute in w.revisions.attributes():
            for decision in w.revisions.revise(attribute, w.registry.get(attribute)):
                w.counters["revisions"] += 1
                await emit(decision)

    stalled_checks: dict = {}

    @app.timer(interval=5.0)
    async def redeliver_stalled_partitions():
        """Seek a partition back to its committed offset when its records were fetched but never delivered.

        Seen after a rebalance (a worker of two SIGKILLed and restarted): faust drops the rest of a fetched
        batch when the group generation changes, the fetch position has moved past those records, and
        nothing re-fetches them, so the committed offset stops while the position sits at the end.
        Three checks in a row with nothing in flight and the fetch position past what faust delivered
        trigger a seek back to the committed offset;
        redelivery is idempotent (stored decisions are re-emitted). The same seek re-reads a record lost in
        the middle of a partition, at which the commit guard holds the commit (``heal_held_heads``).
        """
        for tp, offset, action in await heal_held_heads(app.consumer):
            w.counters[f"held_head_{action}"] += 1
            log.warning("%s: commit held at offset %d, which never reached the agent: %s", tp, offset,
                        "redelivering from it" if action == "redeliver" else "no record there, passing it")
        if any(w.inflight.values()):
            stalled_checks.clear()
            return
        consumer = app.consumer
        try:
            sub = consumer._thread._consumer._subscription.subscription
            states = {tp: sub.assignment.state_value(tp) for tp in sub.assignment.tps}
        except Exception:  # noqa: BLE001 - not assigned yet, or rebalancing
            return
        for tp, state in states.items():
            if tp.topic != t_updates.get_topic_name():
                continue
            committed = consumer._committed_offset.get(tp)
            read = consumer._read_offset.get(tp)
            position = state._position
            delivered = -1 if read is None else read
            if position is None or position <= delivered + 1:
                for key in [k for k in stalled_checks if k[0] == tp]:
                    del stalled_checks[key]
                continue
            key = (tp, delivered)
            stalled_checks[key] = stalled_checks.get(key, 0) + 1
            if stalled_checks[key] >= 3:
                target = committed if committed is not None else max(delivered, 0)
                log.warning("%s stalled: fetch position %d, delivered up to %d: redelivering from %d", tp,
                            position, delivered, target)
                w.counters["stalled_redeliveries"] += 1
                stalled_checks.pop(key, None)
                await consumer.seek(tp, target)

    @app.task
    async def load_models():
        await read_models_forever(w.registry, st.kafka.bootstrap, st.topic("ds_model"))

    @app.page("/metrics")
    async def metrics_view(web, request):
        body, content_type = m.render()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.on_before_shutdown.connect
    async def close_worker(app, **kwargs):
        await w.close()

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"ok": True, "models_ready": w.registry.ready.is_set(),
                         "counters": dict(w.counters), "time": time.time()})

    @app.page("/debug/tasks")
    async def tasks_view(web, request):
        """Where every asyncio task of this worker is waiting (for diagnosing a stalled worker)."""
        import collections

        where: collections.Counter = collections.Counter()
        for task in asyncio.all_tasks():
            coro, frame = task.get_coro(), None
            while coro is not None:
                frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                         or getattr(coro, "ag_frame", None) or frame)
                coro = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                        or getattr(coro, "ag_await", None))
            if frame is not None:
                code = frame.f_code
                where[f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])}:{frame.f_lineno} {code.co_name}"] += 1
        return web.json(dict(where.most_common(40)))

    @app.page("/model")
    async def model_view(web, request):
        return web.json(w.registry.summaries())

    @app.page("/counters")
    async def counters_view(web, request):
        gw = w.gateway
        llm = {n: c.as_dict() if hasattr(c, "as_dict") else vars(c) for n, c in (gw.counters() if gw else {}).items()}
        consumer = app.consumer
        parts = {
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in consumer.assignment()),
            "paused": sorted(f"{tp.topic}:{tp.partition}" for tp in getattr(consumer, "_paused_partitions", ())),
            "active": sorted(f"{tp.topic}:{tp.partition}" for tp in (consumer._active_partitions or ())),
        }
        fetch = {}
        try:  # the aiokafka consumer faust runs in its thread: positions as its fetcher sees them
            sub = consumer._thread._consumer._subscription.subscription
            for tp in sub.assignment.tps:
                state = sub.assignment.state_value(tp)
                fetch[f"{tp.topic}:{tp.partition}"] = {
                    "position": state._position, "highwater": state.highwater, "paused": state.paused,
                    "status": str(state._status), "committed": consumer._committed_offset.get(tp),
                    "read_offset": consumer._read_offset.get(tp)}
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            fetch = {"error": repr(exc)}
        return web.json({"worker": dict(w.counters), "llm": llm, "inflight": dict(w.inflight),
                         "partitions": parts, "fetch": fetch})

    from streams.feedback import install_feedback
    from streams.reconfig import install_reconfig

    install_feedback(app, w, st, products, dead_letter)  # gold labels: learner + agreement scores (/feedback)
    install_reconfig(app, w, st, policy)  # LLM list re-read from LLMENS_CONFIG without a restart

    app.llmens_worker = w  # type: ignore[attr-defined]
    return app, w
