"""The decision path: one product event in, its stored decisions or fresh LLM votes -> DS posterior -> outputs.

:class:`ProductDecider` holds the delivery contract (docs/delivery.md): a redelivered (product, version)
re-emits its stored decisions without asking any LLM; an older version than the one stored or in flight is
dropped; bad input is dead-lettered with its reason; a product every LLM failed is retried, then
dead-lettered; decisions are stored (and durable) before they are emitted; a product whose partition was
revoked mid-decision is abandoned to its new owner (its offset is not committed).

With the student on (issue 33, :mod:`streams.students`) each attribute's student votes first; a decision it
made alone records ``stopped="student"``, its votes reach the DS model only where an LLM answered beside it, and
what it learns (the panel's decision without its vote, weighted by confidence) goes to the learner with the
votes' flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from llmens_core.adaptive import ask_in_stages, ask_student_first, decided_alone, teaching
from llmens_core.decisions import all_failed, decide, votes_by_attribute
from llmens_core.events import AttributeDecision, EventError, LabelVote, ProductUpdate
from llmens_core.student import STUDENT, Guess, Students, product_text
from streams.outputs import Outputs
from streams.state import ProductStore
from streams.worker import Worker

log = logging.getLogger("llmens.worker")

__all__ = ["ProductDecider"]


class ProductDecider:
    """Decides product events for one worker; :meth:`handle` returns False when abandoned to a new owner.

    ``claim(message)`` holds the message's partition while its decisions are stored and emitted and returns
    the release, or None when the partition is no longer this worker's (``GuardedConsumer.claim`` in the
    worker; always granted in-process). ``policy`` is the adaptive policy or None (ask every LLM).
    """

    def __init__(self, worker: Worker, outputs: Outputs, store: ProductStore, *,
                 claim: Callable[[Any], Callable[[], None] | None] = lambda msg: (lambda: None),
                 policy: Any = None) -> None:
        self.w = worker
        self.outputs = outputs
        self.store = store
        self.claim = claim
        self.policy = policy
        self.latest_seen: dict[str, int] = {}
        self.deciding: dict[tuple[str, int], asyncio.Future] = {}
        """(product, version) being decided here: a redelivered copy waits for it, then re-emits its state."""
        self._events_in = worker.metrics.events_in.labels(worker.settings.topic("product_updates"))

    async def handle(self, event: Any) -> bool:
        """Decide (or re-emit, or drop, or dead-letter) one product event."""
        started, msg, st, c = time.perf_counter(), event.message, self.w.settings, self.w.counters
        c["events_in"] += 1
        self._events_in.inc()
        try:
            product = ProductUpdate.from_bytes(event.value, max_bytes=st.max_event_bytes)
        except EventError as exc:
            reason = str(exc)
            kind = "too_large" if reason.startswith("event too large") else "invalid"
            await self.outputs.dead_letter(event.value, reason, msg, kind)
            return True
        attrs, problem = self._requested(product)
        if problem is not None:
            await self.outputs.dead_letter(event.value, problem[0], msg, problem[1])
            return True
        pid, version = product.product_id, product.version
        running = self.deciding.get((pid, version))
        if running is not None:
            # redelivered (a rebalance gave the partition back) while the first copy is still deciding:
            # deciding twice could give two values under two models, so wait and re-emit what it stored
            c["waited_for_same_version"] += 1
            with self.w.stage("wait_same_version"):
                await asyncio.shield(running)
        state = self.store.get(pid)
        if await self._answered_from_state(state, version, attrs):
            return True
        if self.latest_seen.get(pid, -1) > version:
            self._superseded()
            return True
        return await self._decide_once(event, product, attrs, state, started)

    def _requested(self, product: ProductUpdate) -> tuple[list[str], tuple[str, str] | None]:
        attrs, unknown = self.w.schema.requested(product.attributes, product.category)
        if unknown:
            return attrs, (f"attributes: unknown attribute(s) {unknown}", "unknown_attribute")
        if not attrs:
            return attrs, (f"attributes: none requested and category {product.category!r} has no default "
                           "attributes", "no_attributes")
        return attrs, None

    async def _answered_from_state(self, state: dict | None, version: int, attrs: list[str]) -> bool:
        """True when the stored state settles the event: an older version, or the same one decided."""
        if state is None:
            return False
        if version < state["version"]:
            self._superseded()
            return True
        if version == state["version"] and set(attrs) <= set(state["decisions"]):
            self.w.counters["redelivered"] += 1  # same (product, version): the same decisions again
            for a in attrs:
                await self.outputs.decision(AttributeDecision.model_validate(state["decisions"][a]))
            return True
        return False

    def _superseded(self) -> None:
        self.w.counters["superseded"] += 1
        self.w.metrics.superseded.inc()

    async def _decide_once(self, event: Any, product: ProductUpdate, attrs: list[str], state: dict | None,
                           started: float) -> bool:
        pid, version = product.product_id, product.version
        self.latest_seen[pid] = version
        done = self.deciding[(pid, version)] = asyncio.get_running_loop().create_future()
        try:
            return await self._decide_and_emit(event, product, attrs, state, started)
        finally:
            if self.deciding.get((pid, version)) is done:
                del self.deciding[(pid, version)]
            done.set_result(None)
            if self.latest_seen.get(pid) == version:
                del self.latest_seen[pid]

    async def _decide_and_emit(self, event: Any, product: ProductUpdate, attrs: list[str], state: dict | None,
                               started: float) -> bool:
        w, msg = self.w, event.message
        pid, version = product.product_id, product.version
        with w.stage("wait_models"):
            await w.registry.ready.wait()
            if w.students is not None:
                await w.students.ready.wait()
        t_llm = time.perf_counter()
        with w.stage("ask_llms"):
            votes, failure, stop_reason, guesses = await self.label_with_retries(product, attrs)
        if stop_reason is not None:
            w.counters[f"adaptive_{stop_reason}"] += 1
        llm_seconds = time.perf_counter() - t_llm
        if state is not None and state["version"] < version:
            w.revisions.drop_product(pid)
        if self.latest_seen.get(pid, -1) > version:  # a newer version arrived while we waited on LLMs
            self._superseded()
            return True
        if failure is not None:
            await self.outputs.dead_letter(event.value, failure, msg, "all_llms_failed")
            return True
        # Decide every attribute before the first await: a decision's processing time is our work, not
        # the event loop's queue (measured: awaiting the votes record first put p99 overhead at ~400 ms).
        reason = "adaptive" if self.policy is not None else "complete"
        decisions, to_flush = [], []
        text = None if guesses is None else _text(product)
        for attribute, by_llm in _with_student(votes_by_attribute(votes), guesses).items():
            alone = guesses is not None and decided_alone(by_llm)
            model = w.registry.get(attribute)
            decision, _ = decide(pid, version, attribute, by_llm, model, llm_seconds=llm_seconds, started=started,
                                 reason=reason, stopped="student" if alone else stop_reason)
            decisions.append(decision)
            if guesses is not None and self._student_part(attribute, text, by_llm, model, alone):
                to_flush.append(attribute)
            if not alone and w.stats.add(attribute, pid, by_llm):
                to_flush.append(attribute)
        release = self.claim(msg)
        if release is None:
            # revoked while we waited on LLMs: the partition's new owner decides it from the committed offset
            w.counters["abandoned_revoked"] += 1
            return False
        try:
            await self._store_and_emit(msg, pid, version, decisions, votes, text)
        finally:
            release()
        for attribute in dict.fromkeys(to_flush):
            await self.flush_stats(attribute)
        return True

    def _student_part(self, attribute: str, text: str | None, by_llm: dict, model: Any, alone: bool) -> bool:
        """Count the student's role in one decision and keep what it learns from it (the panel's decision without
        its vote, weighted by confidence; nothing when it decided alone). True when the teaching is due a flush."""
        w = self.w
        role = "alone" if alone else ("member" if by_llm.get(STUDENT) is not None else "abstain")
        w.counters[f"student_{role}"] += 1
        w.metrics.observe_student(attribute, role)
        taught = teaching(model, by_llm) if not alone and text is not None else None
        if taught is None:
            return False
        rows = w.teach.setdefault(attribute, [])
        rows.append((text, *taught))
        return len(rows) >= w.settings.aggregation.stats_flush_items

    async def _store_and_emit(self, msg: Any, pid: str, version: int, decisions: list[AttributeDecision],
                              votes: list[LabelVote], text: str | None = None) -> None:
        """State first (durable), then the outputs: a redelivery re-emits what was stored (docs/delivery.md).

        With the student on, the state keeps the product's text too: gold feedback on it teaches the student."""
        w = self.w
        state = {"version": version, "decisions": {d.attribute: d.model_dump(mode="json") for d in decisions}}
        if text is not None:
            state["text"] = text
        with w.stage("save_state"):
            await self.store.save(pid, state, msg.partition)
        with w.stage("emit"):
            for decision in decisions:
                await self.outputs.decision(decision)
                w.revisions.add(decision)
            await self.outputs.votes(pid, votes)

    async def label_with_retries(self, product: ProductUpdate, attrs: list[str]
                                 ) -> tuple[list[LabelVote], str | None, str | None, dict[str, Guess] | None]:
        """(votes, failure reason or None, adaptive stop reason or None, the students' guesses or None when the
        student is off); retries while every LLM fails."""
        st, gw = self.w.settings, await self.w.start_gateway()
        votes: list[LabelVote] = []
        for attempt in range(st.all_failed_retries + 1):
            votes, stop_reason, guesses = await self.ask(gw, product, attrs)
            if not all_failed(votes):
                return votes, None, stop_reason, guesses
            self.w.counters["all_failed_attempts"] += 1
            if attempt < st.all_failed_retries:
                # not before a breaker lets a probe through: retrying into open breakers only used up the
                # attempts (seen under CPU overload: timeouts opened every breaker, products were dead-lettered)
                await asyncio.sleep(max(st.all_failed_backoff_s * (2**attempt), gw.available_in() + 0.05))
        errors = sorted({f"{v.llm}: {v.error}" for v in votes})
        return votes, f"every LLM failed after {st.all_failed_retries + 1} attempts: " + "; ".join(errors), None, None

    async def ask(self, gw: Any, product: ProductUpdate,
                  attrs: list[str]) -> tuple[list[LabelVote], str | None, dict[str, Guess] | None]:
        """All LLMs at once, or (adaptive) stage by stage until asking the rest could not pay off; with the student
        on, its votes first (:func:`~llmens_core.adaptive.ask_student_first`) and LLMs only for what they leave
        unsettled.

        Returns the LLMs' votes, for adaptive runs why asking stopped ("warmup", "explore", "confident",
        "exhausted", "student": no LLM asked) and the students' guesses (None when the student is off).
        """
        if self.policy is None:
            return await gw.label(product, attrs), None, None
        models = {a: self.w.registry.get(a) for a in attrs}
        label = lambda todo, llms: gw.label(product, todo, llms=llms)  # noqa: E731
        students = self.w.students
        if students is None:
            votes, _, _, reason = await ask_in_stages(self.policy, label, product.product_id, attrs, models,
                                                      rule=self.w.settings.adaptive.rule)
            return votes, reason, None
        with self.w.stage("student"):  # a few ms of scikit-learn per attribute: off the event loop
            guesses = await asyncio.to_thread(students.guesses, _text(product), attrs)
        votes, _, _, reason = await ask_student_first(self.policy, label, product.product_id, attrs, models,
                                                      Students.votes(guesses),
                                                      may_decide_alone=not students.explore(product.product_id))
        return votes, reason, guesses

    async def flush_stats(self, attribute: str) -> None:
        """Send the votes of the items decided since the last flush to ``attribute``'s learner (one mini-batch),
        and what its student learns from them (a ``teach`` record)."""
        batch = self.w.stats.take_votes(attribute)
        if batch is not None and batch[0]:
            items, workers, labels = batch
            await self.outputs.stats(attribute, {"votes": {"items": items, "workers": workers, "labels": labels}})
            self.w.counters["stats_sent"] += 1
        rows = self.w.teach.pop(attribute, None)
        if rows:
            texts, labels, weights = (list(x) for x in zip(*rows))
            await self.outputs.stats(attribute, {"teach": {"texts": texts, "labels": labels, "weights": weights}})
            self.w.counters["teach_sent"] += 1

    def pending_attributes(self) -> list[str]:
        """Attributes with votes or teaching waiting for a flush."""
        return list(dict.fromkeys([*self.w.stats.attributes(), *self.w.teach]))

    async def revise(self) -> None:
        """Re-emit recent decisions that a newer DS model flips (revision + 1)."""
        for attribute in self.w.revisions.attributes():
            for decision in self.w.revisions.revise(attribute, self.w.registry.get(attribute)):
                self.w.counters["revisions"] += 1
                await self.outputs.decision(decision)


def _text(product: ProductUpdate) -> str:
    return product_text(product.title, product.description, product.category)


def _with_student(by_attr: dict[str, dict], guesses: dict[str, Guess] | None) -> dict[str, dict]:
    """The LLMs' votes per attribute with the student's vote where it voted (its abstentions left out)."""
    if guesses is None:
        return by_attr
    for attribute, votes in Students.votes(guesses).items():
        by_attr.setdefault(attribute, {}).update(votes)
    return by_attr
