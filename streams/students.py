"""The students in the stream (issue 33): every worker's view of them, and how the learner trains and publishes them.

A student (:class:`~llmens_core.student.AttributeStudent`) is a text classifier per attribute that votes first
and, where its measured agreement with the panel licenses it and the DS model's posterior settles on its vote,
decides a product with no LLM call (:func:`llmens_core.adaptive.ask_student_first`).

* **Teaching**: a worker that decided an attribute on which some LLM answered sends, with its vote flush, a
  ``{"attribute", "teach": {"texts", "labels", "weights"}}`` record on ``ds-stats``: the panel's decision without
  the student's vote and its posterior as the weight (:func:`llmens_core.adaptive.teaching`). Gold feedback's
  ``gold`` records carry the product's text (kept in the ``products`` table while the student is on) and teach
  it at full weight.
* **Learning**: the learner of an attribute (the worker owning its ``ds-stats`` partition, as for DS models)
  learns those records into its own copy of the student (:func:`learn_student`, prequential: each product is
  predicted before it is learnt, which is the record that licenses the student) and publishes it, at most every
  ``student.publish_seconds``, on the compacted ``student-model`` topic (key attribute).
* **Reading**: every worker tails ``student-model`` into a :class:`StudentRegistry`
  (:func:`streams.models.read_models_forever`, as for DS models) and decides nothing before it has read to the
  end, so a new or restarted worker starts from the latest student. Serialisation is numpy arrays
  (``allow_pickle=False``) and JSON: nothing read from a topic is unpickled.

Unlike a DS model, a student learnt but not yet published when its learner dies loses those steps (at most
``publish_seconds`` of teaching): its offsets were committed with the DS model's. The student only decides where
its record says it may, so a lost step costs a few LLM calls, never a wrong licence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from llmens_core.schema import AttributeSchema
from llmens_core.student import AttributeStudent, Guess, Students
from streams.settings import Settings

log = logging.getLogger("llmens.students")

__all__ = ["StudentLearner", "StudentRegistry", "has_student_part", "learn_student"]


class StudentRegistry:
    """Attribute -> the current :class:`AttributeStudent` (cold until the first published version is read).

    Duck-types :class:`streams.models.ModelRegistry` for :func:`streams.models.read_models_forever`
    (``decode_newer``, ``offer``, ``get``, ``items``, ``ready``); decisions read :meth:`guesses`.
    """

    def __init__(self, schema: AttributeSchema, settings: Settings):
        st = settings.student
        self.schema = schema
        self.kwargs = {"target": st.licence_target(settings.adaptive), "window": st.window,
                       "min_scored": st.min_scored, "n_features": st.n_features}
        self.students = Students(self.cold, exploration_share=st.exploration_share)
        self.ready = asyncio.Event()
        self.on_update: Callable[[str, dict], None] | None = None

    def cold(self, attribute: str) -> AttributeStudent:
        return AttributeStudent(list(self.schema[attribute].classes), **self.kwargs)

    def get(self, attribute: str) -> AttributeStudent:
        return self.students[attribute]

    def offer(self, attribute: str, student: AttributeStudent) -> bool:
        """Adopt ``student`` if it is newer than the one held; True when adopted."""
        cur = self.students.get(attribute)
        if cur is not None and cur.version >= student.version:
            return False
        self.students[attribute] = student
        if self.on_update is not None:
            self.on_update(attribute, student.summary())
        return True

    def decode_newer(self, attribute: str, data: bytes) -> AttributeStudent | None:
        """The student in ``data`` when newer than the one held (the version is peeked first), else None."""
        try:
            cur = self.students.get(attribute)
            if attribute not in self.schema or (cur is not None
                                                and cur.version >= AttributeStudent.peek_version(data)):
                return None
            return _decode_frozen(data)
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop the worker
            log.error("ignoring undecodable student for %s: %s", attribute, exc)
            return None

    def items(self):
        return self.students.items()

    def explore(self, product_id: str) -> bool:
        """True for the students' exploration share: the LLMs are asked whatever the student says."""
        return self.students.explore(product_id)

    def guesses(self, text: str, attributes: Sequence[str]) -> dict[str, Guess]:
        return self.students.guesses(text, [a for a in attributes if a in self.schema])

    def summaries(self) -> dict[str, dict]:
        return {a: s.summary() for a, s in sorted(self.students.items())}


def has_student_part(record: Mapping) -> bool:
    """True when a ``ds-stats`` record teaches the student: a ``teach`` record, or gold with a product's text."""
    return "teach" in record or any(g.get("text") for g in record.get("gold") or ())


def learn_student(student: AttributeStudent, records: Sequence[Mapping], counters: dict | None = None) -> int:
    """Learn one attribute's ``teach`` and gold records into ``student`` in order; returns the products learnt.

    CPU-bound (scikit-learn's ``partial_fit``): the learner runs it in a thread. Each ``teach`` record (one worker
    flush) is one mini-batch, predicted before it is learnt: merging the records of a learner that fell behind
    would predict them all with the weights from before the first, and the record would understate the student
    (seen on the broker: two passes over the same 100 products left it unlicensed). A record that cannot be learnt
    is logged and skipped."""
    counters = {} if counters is None else counters
    texts: list[str] = []
    labels: list[str] = []
    weights: list[float] = []
    learnt = 0

    def skip(what: str, exc: Exception) -> None:
        log.error("ignoring %s of the student that cannot be learnt: %r", what, exc)
        counters["student_records_skipped"] = counters.get("student_records_skipped", 0) + 1

    def step(fn: Callable[[], int], what: str) -> int:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop learning
            skip(what, exc)
            return 0

    def flush() -> int:
        if not texts:
            return 0
        n = step(lambda: student.learn(list(texts), list(labels), list(weights)), "a teach batch")
        texts.clear()
        labels.clear()
        weights.clear()
        return n

    for d in records:
        if "teach" in d:
            t = d["teach"]
            if len(t["texts"]) == len(t["labels"]) == len(t["weights"]):
                texts.extend(t["texts"])
                labels.extend(t["labels"])
                weights.extend(float(w) for w in t["weights"])
                learnt += flush()
            else:
                skip("a teach record", ValueError("texts, labels and weights differ in length"))
            continue
        gold = [g for g in d.get("gold") or () if g.get("text")]
        if gold:
            learnt += flush()
            n = step(lambda g=gold: student.learn_gold([x["text"] for x in g], [x["label"] for x in g]), "gold")
            learnt += n
            counters["student_gold_applied"] = counters.get("student_gold_applied", 0) + n
    learnt += flush()
    counters["student_items_learnt"] = counters.get("student_items_learnt", 0) + learnt
    return learnt


class StudentLearner:
    """The learner's own copy of each attribute's student: learnt off the event loop, published when due.

    Its copy starts again from the registry's when another learner published a newer version (a rebalance moved
    the attribute). Publishing waits ``publish_seconds`` since the attribute's last publication; the registry then
    adopts a new object decoded from the published bytes, so decisions never read a student being trained.
    """

    def __init__(self, registry: StudentRegistry, topic: str, *, publish_seconds: float = 2.0,
                 counters: dict | None = None, on_publish: Callable[[str, dict], None] | None = None):
        self.registry = registry
        self.topic = topic
        self.publish_seconds = float(publish_seconds)
        self.counters = counters if counters is not None else {}
        self.on_publish = on_publish
        self.own: dict[str, AttributeStudent] = {}
        self.dirty: set[str] = set()
        self.published_at: dict[str, float] = {}

    def _copy(self, attribute: str) -> AttributeStudent:
        current = self.registry.get(attribute)
        mine = self.own.get(attribute)
        if mine is None or current.version > mine.version:
            mine = self.own[attribute] = AttributeStudent.from_bytes(current.to_bytes())
        return mine

    async def learn(self, attribute: str, records: Sequence[Mapping]) -> int:
        """Learn the records of ``attribute`` that teach its student; returns the products learnt."""
        mine = [r for r in records if has_student_part(r)]
        if not mine or attribute not in self.registry.schema:
            return 0
        student = await asyncio.to_thread(self._copy, attribute)
        n = await asyncio.to_thread(learn_student, student, mine, self.counters)
        if n:
            self.dirty.add(attribute)
        return n

    async def publish_due(self, producer, now: float) -> list[asyncio.Future]:
        """Send every changed student whose last publication is ``publish_seconds`` old; the send futures."""
        futures = []
        for attribute in sorted(self.dirty):
            if now - self.published_at.get(attribute, float("-inf")) < self.publish_seconds:
                continue
            student = self.own[attribute]
            data = await asyncio.to_thread(student.to_bytes)
            self.registry.offer(attribute, await asyncio.to_thread(_decode_frozen, data))
            self.dirty.discard(attribute)
            self.published_at[attribute] = now
            self.counters["student_versions"] = self.counters.get("student_versions", 0) + 1
            if self.on_publish is not None:
                self.on_publish(attribute, self.registry.get(attribute).summary())
            futures.append(await producer.send(self.topic, key=attribute.encode(), value=data))
        return futures


def _decode_frozen(data: bytes) -> AttributeStudent:
    """A published student as a worker reads it: decoded and laid out for prediction (never learnt)."""
    return AttributeStudent.from_bytes(data).freeze()
