"""A backfill's outputs to their topics, as the stream and ``llmens fit`` write them.

Decisions go to ``product-attributes`` keyed by product id (and to ``attribute-review`` below the settings'
``review_below``, as the worker routes them), models to ``ds-model`` keyed by attribute (versions above those
on the topic, as ``fit`` sets them, so running workers adopt them), and what could not be labelled to
``dead-letter`` with its reason, as a :class:`DeadLetter` whose original is the product event.
:func:`backfill_catalogue` is ``llmens backfill``: the core's backfill from a catalogue file to these topics.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.backfill import (
    BackfillOptions,
    BackfillProgress,
    BackfillState,
    BatchRequest,
    fit_and_decide,
    plan_requests,
    run_batches,
)
from llmens_core.costs import cost_summary
from llmens_core.events import AttributeDecision, DeadLetter, ProductUpdate
from llmens_core.schema import AttributeSchema
from streams.harness.publishing_models import current_versions, publish_models
from streams.outputs import DEAD_LETTER_KEEP_BYTES
from streams.settings import Settings

__all__ = ["backfill_catalogue", "dead_letter", "next_versions", "publish_backfill"]


def next_versions(settings: Settings, attributes: Iterable[str]) -> dict[str, int]:
    """The version each attribute's new model gets: one above the latest on ``ds-model``."""
    current = current_versions(settings.kafka.bootstrap, settings.topic("ds_model"))
    return {a: current.get(a, 0) + 1 for a in attributes}


def dead_letter(product: ProductUpdate, reason: str, source: str) -> DeadLetter:
    """The dead letter of a product the backfill could not label (``source``: the catalogue file)."""
    return DeadLetter.wrap(product.to_bytes(), f"backfill: {reason}", topic=source, partition=-1, offset=-1,
                           key=product.product_id.encode(), keep_bytes=DEAD_LETTER_KEEP_BYTES)


def publish_backfill(settings: Settings, decisions: list[AttributeDecision],
                     models: Mapping[str, OnlineDawidSkene], dead: list[DeadLetter]) -> dict[str, int]:
    """Send everything and wait for delivery; returns the records sent per topic."""
    bs = settings.kafka.bootstrap
    p = Producer({"bootstrap.servers": bs, "log_level": 0, "enable.idempotence": True, "linger.ms": 20})
    decisions_topic, review_topic = settings.topic("product_attributes"), settings.topic("attribute_review")
    dl_topic = settings.topic("dead_letter")
    sent = {decisions_topic: 0, review_topic: 0, dl_topic: 0}
    for d in decisions:
        body, key = d.to_bytes(), d.product_id.encode()
        _produce(p, decisions_topic, key, body)
        sent[decisions_topic] += 1
        if d.confidence < settings.aggregation.review_below:
            _produce(p, review_topic, key, body)
            sent[review_topic] += 1
    for dl in dead:
        _produce(p, dl_topic, base64.b64decode(dl.key_b64) if dl.key_b64 else None, dl.to_bytes())
        sent[dl_topic] += 1
    if p.flush(60):
        raise RuntimeError("could not deliver every decision and dead letter")
    if models:
        publish_models(bs, settings.topic("ds_model"), models)
    sent[settings.topic("ds_model")] = len(models)
    return sent


def _produce(p: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, key=key, value=value)
            return
        except BufferError:  # the local queue is full: let it drain
            p.poll(0.5)


def backfill_catalogue(file: Path, state_dir: Path, settings: Settings, opts: BackfillOptions, *,
                       publish: bool = True, on_progress: Callable[[BackfillProgress], None] | None = None,
                       fit_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Label every product of ``file`` through the batch APIs, fit, decide and (``publish``) send the outputs.

    Returns a summary: products, requests, decisions, dead letters, per-LLM usage and dollars (at each
    endpoint's batch price), what was sent per topic. Decisions are also written to ``state_dir/decisions.jsonl``.
    A backfill whose outputs were published already is not published again.
    """
    from streams.harness.publishing import iter_products

    schema = AttributeSchema.load(settings.attributes_file)
    rows = list(iter_products(file))
    invalid = [(n, err) for n, rec, err in rows if rec is None]
    products = [ProductUpdate.model_validate(rec) for _, rec, _ in rows if rec is not None]
    requests, unasked = plan_requests(products, settings.llms, schema)
    if not requests and not unasked:
        raise ValueError(f"{file}: no product to ask (or no enabled LLM with a batch API in the settings)")
    state = BackfillState.load(state_dir)
    end = asyncio.run(run_batches(settings.llms, requests, state, opts, on_progress))
    if publish and state.published:  # finished and sent: the decisions on disk are what was published
        decisions = [AttributeDecision.from_bytes(x) for x in
                     (state_dir / "decisions.jsonl").read_bytes().splitlines() if x.strip()]
        models: Mapping[str, OnlineDawidSkene] = {}
    else:
        attrs = {a.name for r in requests for a in r.attributes}
        models, decisions = fit_and_decide(
            state.vote_lines(), schema, state_dir / "votes.jsonl", families={e.name: e.family for e in settings.llms
                                                                             if e.family},
            versions=next_versions(settings, attrs) if publish else None, fit_options=fit_options)
        (state_dir / "decisions.jsonl").write_bytes(b"".join(d.to_bytes() + b"\n" for d in decisions))
    dead = _dead_letters(requests, unasked, state, decisions, str(file))
    sent: dict[str, int] = {}
    if publish and not state.published:
        sent = publish_backfill(settings, decisions, models, dead)
        state.published = True
        state.save()
    usage = state.usage()
    return {"products": len(products), "invalid_lines": invalid, "requests": end.total, "answered": end.answered,
            "dead_requests": end.dead, "decisions": len(decisions),
            "decided_products": len({d.product_id for d in decisions if d.value is not None}),
            "dead_letters": len(dead), "usage": usage, "cost": cost_summary(usage, len(decisions)), "sent": sent,
            "already_published": publish and not sent}


def _dead_letters(requests: list[BatchRequest], unasked: list[tuple[ProductUpdate, str]], state: BackfillState,
                  decisions: list[AttributeDecision], source: str) -> list[DeadLetter]:
    """One per request given up on (its LLM and why) and one per product nobody could be asked about."""
    by_id = {r.custom_id: r for r in requests}
    out = [dead_letter(p, reason, source) for p, reason in unasked]
    for cid, reason in sorted(state.dead.items()):
        r = by_id.get(cid)
        if r is not None:
            out.append(dead_letter(r.product, f"llm {r.llm}: {reason}", source))
    decided = {d.product_id for d in decisions}
    for p in {r.product.product_id: r.product for r in requests}.values():
        if p.product_id not in decided:
            out.append(dead_letter(p, "all_llms_failed: no LLM gave an answer", source))
    return out
