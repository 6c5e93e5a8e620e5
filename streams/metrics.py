"""Prometheus metrics of one worker: one :class:`CollectorRegistry` per worker (no global default registry).

Two kinds of sources:

* metric objects the app updates as it goes (:class:`WorkerMetrics` attributes): events in/out, dead letters,
  superseded events, decisions, decision confidence, per-LLM accuracy/weight and model version per attribute,
  agreement with gold feedback (``llmens_feedback_total``; the student's votes under ``llm="student"``), config
  reloads, and the student's part (issue 33): decisions it made alone, as a member or abstaining
  (``llmens_student_decisions_total``, ``llmens_student_alone_share``) and its measured agreement with the panel,
  records, licensed threshold and version per attribute (``llmens_student_agreement`` ...);
* custom collectors read at scrape time:
  - :class:`GatewayCollector` turns the LLM gateway's cumulative per-endpoint counters
    (``Gateway.counters() -> {name: EndpointCounters}``) into ``llmens_llm_*`` families: request latency
    histogram, errors by kind (``http_429``, ``timeout``, ...), retries, breaker state, tokens, cost
    (``llmens_llm_cost_total{llm}``, USD: measured tokens x configured price). The gateway already counts these,
    so they are exported from there instead of being counted twice;
  - :class:`LagCollector` exports ``llmens_kafka_consumergroup_lag{consumergroup,topic,partition}`` (named after
    kafka_exporter's ``kafka_consumergroup_lag``) from :mod:`streams.lag`, refreshed in a background thread at
    most every ``refresh_s`` seconds, so a scrape never waits on Kafka (and never blocks an event loop).

``render_metrics(registry)`` gives the bytes and content type for the worker's ``/metrics`` page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = [
    "BREAKER_VALUES",
    "CONFIDENCE_BUCKETS",
    "DEAD_LETTER_REASONS",
    "GatewayCollector",
    "LagCollector",
    "WorkerMetrics",
    "default_metrics",
    "render_metrics",
    "update_model_metrics",
]

log = logging.getLogger("llmens.metrics")

CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
DEAD_LETTER_REASONS = ("invalid", "too_large", "unknown_attribute", "no_attributes", "all_llms_failed", "internal")
"""Reasons of the product path, exported at 0 from the start: ``increase()`` (the dead-letter alert) cannot see
the first dead letter of a series that appears already at 1."""
BREAKER_VALUES = {"closed": 0.0, "open": 1.0, "half_open": 0.5, "half-open": 0.5}
"""``llmens_llm_breaker_open``: 0 closed, 1 open, 0.5 half-open."""


class WorkerMetrics:
    """The metric objects of one worker, registered on ``self.registry``.

    Labels: ``topic`` is the full topic name; ``llm`` the endpoint name; ``reason`` of dead letters is a short
    kind (``invalid``, ``too_large``, ``all_llms_failed``, ...), of decisions the ``AttributeDecision.reason``.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_in = Counter("llmens_events_in_total", "Events read, by topic", ["topic"], registry=r)
        self.events_out = Counter("llmens_events_out_total", "Events written, by topic", ["topic"], registry=r)
        self.dead_letters = Counter("llmens_dead_letters_total", "Events sent to the dead-letter topic",
                                    ["reason"], registry=r)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.superseded = Counter("llmens_superseded_total",
                                  "Product versions dropped because a newer version arrived", registry=r)
        self.llm_accuracy = Gauge("llmens_llm_accuracy", "Estimated accuracy of an LLM on an attribute (model)",
                                  ["attribute", "llm"], registry=r)
        self.llm_weight = Gauge("llmens_llm_weight", "Vote weight of an LLM on an attribute (log-odds, model)",
                                ["attribute", "llm"], registry=r)
        self.decision_confidence = Histogram("llmens_decision_confidence", "Posterior of the decided label",
                                             ["attribute"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.model_version = Gauge("llmens_model_version", "Version of the aggregation model in use",
                                   ["attribute"], registry=r)
        self.decisions = Counter("llmens_decisions_total", "Decisions written, by attribute and reason",
                                 ["attribute", "reason"], registry=r)
        self.feedback = Counter("llmens_feedback", "Gold feedback scored: the worker's decision (llm=ensemble) "
                                "and each LLM's vote against the human label (agree, disagree, abstain)",
                                ["attribute", "llm", "outcome"], registry=r)
        self.config_reloads = Counter("llmens_config_reloads", "LLM list reloads from the config file, by outcome "
                                      "(applied, unchanged, invalid)", ["outcome"], registry=r)
        self.student_decisions = Counter(
            "llmens_student_decisions", "Decisions by the student's part (issue 33): alone (no LLM asked about the "
            "attribute), member (it voted beside LLMs), abstain (not licensed on this text or probability)",
            ["attribute", "role"], registry=r)
        self.student_alone_share = Gauge("llmens_student_alone_share", "Share of this worker's decisions of an "
                                         "attribute that the student decided alone", ["attribute"], registry=r)
        self.student_agreement = Gauge(
            "llmens_student_agreement", "The student's measured accuracy: prequential agreement with the panel's "
            "decisions over its latest records (bucket=all: every text bucket; text, unfamiliar, empty)",
            ["attribute", "bucket"], registry=r)
        self.student_scored = Gauge("llmens_student_scored", "Records behind llmens_student_agreement",
                                    ["attribute", "bucket"], registry=r)
        self.student_threshold = Gauge("llmens_student_threshold", "Smallest probability at which the student "
                                       "votes, per text bucket (-1: not licensed, it abstains)",
                                       ["attribute", "bucket"], registry=r)
        self.student_version = Gauge("llmens_student_version", "Version of the student in use", ["attribute"],
                                     registry=r)
        self._student_roles: dict[str, dict[str, int]] = {}
        self._collectors: list[Collector] = []

    # -- helpers the app calls ----------------------------------------------------------------------
    def observe_decision(self, decision: Any) -> None:
        """Count one :class:`~llmens_core.events.AttributeDecision` (or a dict with the same fields)."""
        get = decision.get if isinstance(decision, Mapping) else (lambda k, d=None: getattr(decision, k, d))
        attribute = str(get("attribute"))
        self.decisions.labels(attribute, str(get("reason", "complete"))).inc()
        conf = get("confidence")
        if conf is not None:
            self.decision_confidence.labels(attribute).observe(float(conf))

    def update_model_metrics(self, attribute: str, summary: Mapping[str, Any]) -> None:
        """Set accuracy, weight and model version of ``attribute`` from ``OnlineDawidSkene.summary()``."""
        for llm, acc in (summary.get("accuracy") or {}).items():
            self.llm_accuracy.labels(attribute, str(llm)).set(float(acc))
        for llm, w in (summary.get("weight") or {}).items():
            self.llm_weight.labels(attribute, str(llm)).set(float(w))
        if summary.get("version") is not None:
            self.model_version.labels(attribute).set(float(summary["version"]))

    def observe_student(self, attribute: str, role: str) -> None:
        """Count one decision's student role (``alone``, ``member``, ``abstain``) and update the alone share."""
        self.student_decisions.labels(attribute, role).inc()
        roles = self._student_roles.setdefault(attribute, {})
        roles[role] = roles.get(role, 0) + 1
        self.student_alone_share.labels(attribute).set(roles.get("alone", 0) / sum(roles.values()))

    def student_roles(self) -> dict[str, dict[str, int]]:
        """``{attribute: {role: decisions}}`` counted by :meth:`observe_student` on this worker."""
        return {a: dict(r) for a, r in sorted(self._student_roles.items())}

    def update_student_metrics(self, attribute: str, summary: Mapping[str, Any]) -> None:
        """Set the student gauges of ``attribute`` from ``AttributeStudent.summary()``."""
        if summary.get("agreement") is not None:
            self.student_agreement.labels(attribute, "all").set(float(summary["agreement"]))
        for bucket, row in summary.items():
            if not isinstance(row, Mapping) or "window" not in row:
                continue
            if row.get("agreement") is not None:
                self.student_agreement.labels(attribute, bucket).set(float(row["agreement"]))
            self.student_scored.labels(attribute, bucket).set(float(row["window"]))
            tau = row.get("threshold")
            self.student_threshold.labels(attribute, bucket).set(-1.0 if tau is None else float(tau))
        if summary.get("version") is not None:
            self.student_version.labels(attribute).set(float(summary["version"]))

    def add_collector(self, collector: Collector) -> Collector:
        self.registry.register(collector)
        self._collectors.append(collector)
        return collector

    def attach_gateway(self, counters: Callable[[], Mapping[str, Any]] | Any) -> GatewayCollector:
        """Export a gateway's counters: pass the gateway (its ``counters`` method is used) or a callable."""
        return self.add_collector(GatewayCollector(counters))  # type: ignore[return-value]

    def attach_lag(self, bootstrap: str, groups: Sequence[str] | None = None, **kw: Any) -> LagCollector:
        """Export consumer lag of ``groups`` (e.g. ``[settings.kafka.app_id]``); see :class:`LagCollector`."""
        return self.add_collector(LagCollector(bootstrap, groups, **kw))  # type: ignore[return-value]

    def close(self) -> None:
        for c in self._collectors:
            if hasattr(c, "close"):
                c.close()

    def render(self) -> tuple[bytes, str]:
        return render_metrics(self.registry)


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Prometheus text exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


_DEFAULT: WorkerMetrics | None = None
_DEFAULT_LOCK = threading.Lock()


def default_metrics() -> WorkerMetrics:
    """The process's :class:`WorkerMetrics` (one worker per process), created on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = WorkerMetrics()
        return _DEFAULT


def update_model_metrics(attribute: str, summary: Mapping[str, Any], metrics: WorkerMetrics | None = None) -> None:
    """Set the model gauges of ``attribute`` from an ``OnlineDawidSkene.summary()`` dict."""
    (metrics or default_metrics()).update_model_metrics(attribute, summary)


class GatewayCollector(Collector):
    """``llmens_llm_*`` families from ``{endpoint name: EndpointCounters}`` (cumulative counters)."""

    def __init__(self, counters: Callable[[], Mapping[str, Any]] | Any):
        self._counters = counters.counters if hasattr(counters, "counters") else counters

    def describe(self):
        return []  # families depend on the endpoints; nothing to check at registration

    def collect(self):
        try:
            counters = dict(self._counters() or {})
        except Exception:  # noqa: BLE001 - a scrape must not fail because the gateway is mid-restart
            log.exception("reading gateway counters failed")
            counters = {}
        latency = HistogramMetricFamily("llmens_llm_request_seconds", "Latency of successful LLM calls",
                                        labels=["llm"])
        errors = CounterMetricFamily("llmens_llm_errors", "Failed LLM attempts by kind (http_<status>, timeout, ...)",
                                     labels=["llm", "kind"])
        retries = CounterMetricFamily("llmens_llm_retries", "LLM request retries", labels=["llm"])
        breaker = GaugeMetricFamily("llmens_llm_breaker_open", "Circuit breaker: 0 closed, 0.5 half-open, 1 open",
                                    labels=["llm"])
        tokens = CounterMetricFamily("llmens_llm_tokens", "Tokens used", labels=["llm", "direction"])
        cost = CounterMetricFamily("llmens_llm_cost", "LLM spend in USD: measured tokens x the LLM's configured price "
                                   "per 1k input/output tokens (exported as llmens_llm_cost_total)", labels=["llm"])
        requests = CounterMetricFamily("llmens_llm_requests", "HTTP attempts sent", labels=["llm"])
        calls = CounterMetricFamily("llmens_llm_calls", "Logical calls by outcome", labels=["llm", "outcome"])
        cache = CounterMetricFamily("llmens_llm_cache_hits", "Answers served from the response cache",
                                    labels=["llm"])
        inflight = GaugeMetricFamily("llmens_llm_in_flight", "Requests in flight", labels=["llm"])
        declined = CounterMetricFamily("llmens_llm_declined", "Responses with no answer by the provider's finish "
                                       "reason (refusal, safety, length); billed, never retried as failures",
                                       labels=["llm", "reason"])
        for name, c in sorted(counters.items()):
            h = getattr(c, "latency", None)
            if h is not None:
                run, buckets = 0, []
                for bound, n in zip(list(h.bounds) + [float("inf")], h.counts, strict=False):
                    run += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), run))
                latency.add_metric([name], buckets, float(h.sum))
            for kind, n in sorted((getattr(c, "errors", None) or {}).items()):
                errors.add_metric([name, kind], float(n))
            retries.add_metric([name], float(getattr(c, "retries", 0)))
            breaker.add_metric([name], BREAKER_VALUES.get(str(getattr(c, "breaker_state", "closed")), 0.0))
            tokens.add_metric([name, "in"], float(getattr(c, "tokens_in", 0)))
            tokens.add_metric([name, "out"], float(getattr(c, "tokens_out", 0)))
            cost.add_metric([name], float(getattr(c, "cost_usd", 0.0)))
            requests.add_metric([name], float(getattr(c, "requests", 0)))
            calls.add_metric([name, "success"], float(getattr(c, "successes", 0)))
            calls.add_metric([name, "failure"], float(getattr(c, "failures", 0)))
            cache.add_metric([name], float(getattr(c, "cache_hits", 0)))
            inflight.add_metric([name], float(getattr(c, "in_flight", 0)))
            for reason, n in sorted((getattr(c, "declined", None) or {}).items()):
                declined.add_metric([name, reason], float(n))
        yield from (latency, errors, retries, breaker, tokens, cost, requests, calls, cache, inflight, declined)


class LagCollector(Collector):
    """Consumer lag from :func:`streams.lag.consumer_lag`, cached; refreshed in a daemon thread.

    ``collect()`` returns the last snapshot at once and, when it is older than ``refresh_s``, starts one refresh
    in the background (never more than one at a time). Also exports the Burrow-style status as
    ``llmens_kafka_consumergroup_lag_status`` (0 OK, 1 WARNING, 2 STALLED, 3 STOPPED, -1 UNKNOWN), the committed offset
    (``llmens_kafka_consumergroup_current_offset``) and the log end (``llmens_kafka_topic_partition_current_offset``).
    """

    STATUS_VALUES = {"OK": 0, "WARNING": 1, "STALLED": 2, "STOPPED": 3, "UNKNOWN": -1}

    def __init__(self, bootstrap: str, groups: Sequence[str] | None = None, topics: Sequence[str] | None = None,
                 *, refresh_s: float = 15.0, timeout: float = 5.0, window: int = 10, stopped_after_s: float = 300.0,
                 start: bool = True):
        from streams.lag import LagMonitor

        self.refresh_s = refresh_s
        self._monitor = LagMonitor(bootstrap, groups, topics, window=window, stopped_after_s=stopped_after_s,
                                   timeout=timeout)
        self._rows: list = []
        self._at = 0.0
        self._errors = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        if start:
            self.refresh_async()

    def refresh(self) -> None:
        """Take one sample now (blocking; called from the background thread)."""
        try:
            rows = self._monitor.sample()
            with self._lock:
                self._rows, self._at = rows, time.time()
        except Exception:  # noqa: BLE001 - the next scrape retries
            self._errors += 1
            log.warning("consumer lag refresh failed", exc_info=True)
            with self._lock:
                self._at = time.time()  # back off for refresh_s before the next try

    def refresh_async(self) -> None:
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self.refresh, name="llmens-lag", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a refresh in progress (tests)."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    def close(self) -> None:
        self._closed = True

    def describe(self):
        return []

    def collect(self):
        with self._lock:
            rows, at = list(self._rows), self._at
        if time.time() - at >= self.refresh_s:
            self.refresh_async()
        labels = ["consumergroup", "topic", "partition"]
        lag = GaugeMetricFamily("llmens_kafka_consumergroup_lag", "Consumer group lag per partition", labels=labels)
        cur = GaugeMetricFamily("llmens_kafka_consumergroup_current_offset", "Committed offset per partition",
                                labels=labels)
        status = GaugeMetricFamily("llmens_kafka_consumergroup_lag_status",
                                   "Burrow-style status: 0 OK, 1 WARNING, 2 STALLED, 3 STOPPED, -1 UNKNOWN", labels=labels)
        end = GaugeMetricFamily("llmens_kafka_topic_partition_current_offset", "Log end offset per partition",
                                labels=["topic", "partition"])
        age = GaugeMetricFamily("llmens_kafka_lag_sample_age_seconds", "Seconds since the last lag sample")
        errs = CounterMetricFamily("llmens_kafka_lag_refresh_errors", "Failed lag refreshes")
        ends_done = set()
        for r, st in rows:
            lab = [r.group, r.topic, str(r.partition)]
            if r.lag is not None:
                lag.add_metric(lab, float(r.lag))
            if r.committed is not None:
                cur.add_metric(lab, float(r.committed))
            status.add_metric(lab, float(self.STATUS_VALUES[st.value]))
            if (r.topic, r.partition) not in ends_done:
                ends_done.add((r.topic, r.partition))
                end.add_metric([r.topic, str(r.partition)], float(r.end))
        if at:
            age.add_metric([], max(0.0, time.time() - at))
        errs.add_metric([], float(self._errors))
        yield from (lag, cur, status, end, age, errs)
