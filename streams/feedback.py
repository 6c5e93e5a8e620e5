"""Gold feedback: human-verified labels from ``attribute-feedback`` teach the learner and score the ensemble.

``attribute-feedback`` is keyed by product_id and has the partition count of ``product-updates``, so it is
co-partitioned with the ``products`` table: the worker that decided a product also reads its feedback and
finds, in the table, the votes that product's decision used. For each accepted
:class:`~llmens_core.events.AttributeFeedback` the agent

* sends the item's votes and the gold label to the learner as a ``gold`` record on ``ds-stats`` (key
  attribute); the learner folds it in with the item's posterior clamped to the gold class
  (:func:`llmens_core.aggregation.clamped_stats`), so LLMs that contradict verified labels lose weight; with the
  student on, the record carries the product's text (kept in the table) and the student learns it at full weight;
* scores the worker's decision (its latest revision, ``llm="ensemble"``) and every LLM's vote against the
  label: ``llmens_feedback_total{attribute,llm,outcome}`` and the worker's ``/feedback`` page.

Malformed feedback, an unknown product, attribute or version, and a label outside the attribute's label set
go to ``dead-letter`` with the reason. The gold label is remembered in the product's table record, so the
same label for the same (product, version, attribute) again (a redelivery, a double submission) is counted
once and folded once; a *different* label (a correction) is folded as well.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import faust
import orjson

from llmens_core.events import NOT_PRESENT, AttributeFeedback, EventError
from llmens_core.schema import Attribute, AttributeSchema, normalise_text
from streams.faust_ext.commit_guard import mark_finished
from streams.outputs import Outputs
from streams.settings import Settings
from streams.state import ProductStore
from streams.worker import Worker

log = logging.getLogger("llmens.feedback")

__all__ = ["FeedbackRejected", "FeedbackScores", "canonical_label", "install_feedback", "match_feedback",
           "score_feedback"]

ENSEMBLE = "ensemble"
"""The ``llm`` label under which the worker's own decisions are scored."""


class FeedbackRejected(ValueError):
    """Feedback that cannot be used; ``kind`` is the dead-letter metric label, ``str()`` the reason."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


def canonical_label(attribute: Attribute, label: str) -> str | None:
    """The class ``label`` names (exact, or case/space-insensitive, or a synonym), else ``None``."""
    if label in attribute.classes:
        return label
    key = normalise_text(label)
    if key == NOT_PRESENT:
        return NOT_PRESENT
    return attribute.lookup.get(key)


def match_feedback(fb: AttributeFeedback, state: Mapping[str, Any] | None,
                   schema: AttributeSchema) -> tuple[str, int, dict]:
    """``(gold class, version, stored decision JSON)`` for ``fb``, or :class:`FeedbackRejected` saying why not.

    ``state`` is the product's ``products`` table record ``{"version", "decisions": {attribute: decision}}``.
    """
    if fb.attribute not in schema:
        raise FeedbackRejected(f"attribute: unknown attribute {fb.attribute!r}", "feedback_unknown_attribute")
    attr = schema[fb.attribute]
    label = canonical_label(attr, fb.label)
    if label is None:
        raise FeedbackRejected(f"label: {fb.label!r} is not in the label set of {fb.attribute!r} "
                               f"{list(attr.classes)}", "feedback_bad_label")
    if state is None:
        raise FeedbackRejected(f"product_id: unknown product {fb.product_id!r} (no decision stored for it)",
                               "feedback_unknown_product")
    version = state["version"]
    if fb.version is not None and fb.version != version:
        raise FeedbackRejected(f"version: feedback for version {fb.version} of {fb.product_id!r}, whose decided "
                               f"version is {version}", "feedback_version")
    decision = state["decisions"].get(fb.attribute)
    if decision is None:
        raise FeedbackRejected(f"attribute: product {fb.product_id!r} version {version} has no decision for "
                               f"{fb.attribute!r} (decided: {sorted(state['decisions'])})",
                               "feedback_unknown_attribute")
    return label, version, decision


def score_feedback(value: str | None, votes: Mapping[str, str | None], gold: str) -> list[tuple[str, str]]:
    """``[(llm, outcome)]``: the decision ``value`` (as ``ensemble``) and each vote against ``gold``.

    Outcomes: ``agree``, ``disagree``, ``abstain`` (no usable answer; for the ensemble: nothing decided).
    """
    def outcome(x: str | None) -> str:
        return "abstain" if x is None else ("agree" if x == gold else "disagree")

    return [(ENSEMBLE, outcome(value))] + [(llm, outcome(lab)) for llm, lab in sorted(votes.items())]


class FeedbackScores:
    """Agreement counts with gold feedback per attribute and LLM (``ensemble`` = the worker's decisions)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))

    def add(self, attribute: str, llm: str, outcome: str) -> None:
        self.counts[attribute][llm][outcome] += 1

    def as_dict(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{attribute: {llm: {agree, disagree, abstain, accuracy}}}``; accuracy over answered items."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for attribute, by_llm in sorted(self.counts.items()):
            out[attribute] = {}
            for llm, c in sorted(by_llm.items()):
                row: dict[str, float] = {k: c.get(k, 0) for k in ("agree", "disagree", "abstain")}
                answered = row["agree"] + row["disagree"]
                row["accuracy"] = row["agree"] / answered if answered else float("nan")
                out[attribute][llm] = row
        return out


class FeedbackApplier:
    """Applies one feedback event: checks it against the stored decision, stores the gold label, sends the
    gold item to the attribute's learner and scores the decision and every LLM against it."""

    def __init__(self, w: Worker, store: ProductStore, outputs: Outputs) -> None:
        self.w = w
        self.store = store
        self.outputs = outputs
        self.scores = FeedbackScores()
        self._events_in = w.metrics.events_in.labels(w.settings.topic("attribute_feedback"))

    async def handle(self, event: Any) -> None:
        w, msg = self.w, event.message
        w.counters["feedback_in"] += 1
        self._events_in.inc()
        try:
            fb = AttributeFeedback.from_bytes(event.value, max_bytes=w.settings.max_event_bytes)
        except EventError as exc:
            await self.outputs.dead_letter(event.value, str(exc), msg, "feedback_invalid")
            return
        state = self.store.get(fb.product_id)
        try:
            label, version, decision = match_feedback(fb, state, w.schema)
        except FeedbackRejected as exc:
            await self.outputs.dead_letter(event.value, str(exc), msg, exc.kind)
            return
        gold = dict(state.get("gold") or {})
        if gold.get(fb.attribute) == label:
            w.counters["feedback_duplicates"] += 1
            return
        self.store.put(fb.product_id, {**state, "gold": {**gold, fb.attribute: label}})
        votes: dict[str, str | None] = decision.get("votes") or {}
        if any(lab is not None for lab in votes.values()):
            item = {"product_id": fb.product_id, "version": version, "label": label, "votes": votes,
                    "source": fb.source}
            if state.get("text"):
                item["text"] = state["text"]  # the student learns it at full weight (streams.students)
            await self.outputs.stats(fb.attribute, {"gold": [item]})
            w.counters["feedback_to_learner"] += 1
        latest = w.revisions.latest(fb.attribute, fb.product_id, version)
        self._score(fb.attribute, latest.value if latest is not None else decision.get("value"), votes, label)
        w.counters["feedback_applied"] += 1

    def _score(self, attribute: str, value: str | None, votes: Mapping[str, str | None], label: str) -> None:
        for llm, outcome in score_feedback(value, votes, label):
            self.scores.add(attribute, llm, outcome)
            self.w.metrics.feedback.labels(attribute, llm, outcome).inc()
            if llm == ENSEMBLE:
                self.w.counters[f"feedback_{outcome}"] += 1


def install_feedback(app: faust.App, w: Worker, settings: Settings, store: ProductStore,
                     outputs: Outputs) -> FeedbackScores:
    """Register the feedback agent and the ``/feedback`` page on ``app``; returns the live scores."""
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    t_feedback = app.topic(settings.topic("attribute_feedback"), partitions=settings.topics.partitions, **raw)
    applier = FeedbackApplier(w, store, outputs)

    @app.agent(t_feedback)
    async def apply_feedback(stream):
        async for event in stream.events():
            try:
                await applier.handle(event)
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
                log.exception("unexpected error on feedback %s[%d]@%d", event.message.topic,
                              event.message.partition, event.message.offset)
                await outputs.dead_letter(event.value, f"internal error: {type(exc).__name__}: {exc}", event.message,
                                  "internal")
            mark_finished(event.message)

    @app.page("/feedback")
    async def feedback_view(web, request):
        """Agreement with gold feedback seen by this worker, per attribute and LLM (``ensemble``: decisions)."""
        body = orjson.dumps(applier.scores.as_dict())  # NaN accuracy -> null
        return web.bytes(body, content_type="application/json")

    return applier.scores
