"""The learner: trains each attribute's online model on the votes of decided items and publishes new versions.

It consumes ``ds-stats`` (key = attribute) in its own consumer group, so Kafka's assignment makes
exactly one worker the learner of each attribute partition. It runs on its own consumer rather than as
a faust agent: records are a trickle next to product updates, and sharing faust's fetch loop with a
saturated agent delayed them until the product stream went idle (measured: no model update during a
2,000-product run). Offsets are committed only after the new models are delivered (at least once; a
flush learnt twice after a crash nudges the running average, it loses nothing).

A ``ds-stats`` record is one of
- ``{"attribute", "votes": {"items", "workers", "labels"}}``: a worker's flush of decided items, learnt with
  :meth:`~llmens_core.aggregation.OnlineDawidSkene.partial_fit`, the same step as the library's online model
  (the cold model's race, the young model's races as its data grows, the revisit window, the copy test);
- ``{"attribute", "gold": [...]}``: human-verified items from the feedback agent, learnt with the posterior clamped
  to the gold label (:meth:`~llmens_core.aggregation.OnlineDawidSkene.learn_gold`: a young model stays young);
- ``{"attribute", "stats": {...}}``: a statistics delta, as workers sent before votes (folded as it comes);
- ``{"attribute", "teach": {"texts", "labels", "weights"}}``: what the attribute's student learns (issue 33; the
  DS model skips it), learnt and published on ``student-model`` by :class:`streams.students.StudentLearner`; a
  ``gold`` record that carries products' texts teaches the student too.

The learner trains its own copy of each model off the event loop (``asyncio.to_thread``), one plain step per poll,
and publishes it at once; a young model's race (:meth:`~llmens_core.aggregation.OnlineDawidSkene.young_race`) runs
aside in a child process (:class:`RaceRunner`) and is adopted, with the steps learnt meanwhile, when it is done; once an
attribute has been quiet for :data:`SETTLE_AFTER_S`, its young model races once more on all its items. The
worker's registry adopts each published model as a new object, so decisions never read a model being trained. When
another learner has published a newer version (a restart or a rebalance moved the partition), the copy starts again
from it: a young model's record carries its votes (``to_bytes``), so the new owner goes on racing it as it grows; the
revisit window is not carried and starts empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import orjson

from llmens_core.aggregation import OnlineDawidSkene, SufficientStats
from streams.models import ModelRegistry

if TYPE_CHECKING:  # the race process imports this module: it needs neither scikit-learn nor the admin client
    from streams.students import StudentLearner

log = logging.getLogger("llmens.learner")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies

__all__ = ["SETTLE_AFTER_S", "RaceRunner", "learn_records", "run_learner"]

SETTLE_AFTER_S = 1.0
"""Seconds without a record for an attribute after which its young model, if it learnt items since its last race,
races once more on all of them (:mod:`llmens_core.aggregation.youth`): a burst of products ends at the batch fit of
its votes. A quiet stream's latency, not a tuned value; once per quiet spell."""


def learn_records(model: OnlineDawidSkene, records: list[dict], counters: dict | None = None) -> bytes:
    """Learn one attribute's ``ds-stats`` records in order into ``model`` and return its serialisation.

    Consecutive vote records are learnt as one mini-batch: a learner that fell behind (a young model's race takes
    seconds) catches up in fewer, larger steps instead of racing once per record. CPU-bound: the learner runs it in
    a thread. A record that cannot be learnt is logged and skipped; the others are learnt.
    """
    counters = {} if counters is None else counters
    pending: list[dict] = []

    def count(key: str, n: int = 1) -> None:
        counters[key] = counters.get(key, 0) + n

    def learn_pending() -> None:
        if not pending:
            return
        items: list = []
        workers: list = []
        labels: list = []
        for r, v in enumerate(pending):  # one product decided in two flushes is two items of the batch
            items.extend(f"{r}:{i}" for i in v["items"])
            workers.extend(v["workers"])
            labels.extend(v["labels"])
        try:
            model.partial_fit(items, workers, labels, race=False)
            count("stats_applied", len(pending))
        except Exception as exc:  # noqa: BLE001
            _skip(f"{len(pending)} vote records", exc, count)
        pending.clear()

    for d in records:
        try:
            if "votes" in d:
                v = d["votes"]
                if not len(v["items"]) == len(v["workers"]) == len(v["labels"]):
                    raise ValueError("items, workers and labels differ in length")
                pending.append(v)
                continue
        except Exception as exc:  # noqa: BLE001 - a record that cannot be learnt must not stop learning
            _skip(d.get("attribute"), exc, count)
            continue
        learn_pending()
        try:
            if "gold" in d:
                stats = model.learn_gold((g["votes"], g["label"]) for g in d["gold"])
                count("gold_records_applied")
                count("gold_items_applied", stats.n_items)
            else:
                model.apply(SufficientStats.from_dict(d["stats"]))
                count("stats_applied")
        except Exception as exc:  # noqa: BLE001
            _skip(d.get("attribute"), exc, count)
    learn_pending()
    return model.to_bytes()


def _skip(what: object, exc: Exception, count: Callable[[str], None]) -> None:
    log.error("ignoring a ds-stats record of %s that cannot be learnt: %r", what, exc)
    count("records_skipped")


def _own_copy(own: dict[str, OnlineDawidSkene], registry: ModelRegistry, attribute: str) -> OnlineDawidSkene:
    """The learner's copy of ``attribute``'s model: the one it trains, unless the registry holds a newer version;
    with the LLMs and family hints configured now (a reconfiguration changes the registry's models)."""
    current = registry.get(attribute)
    model = own.get(attribute)
    if model is None or current.version > model.version:
        model = own[attribute] = OnlineDawidSkene.from_bytes(current.to_bytes())
    model.add_workers(registry.llms)
    if any(model.families.get(w) != f for w, f in registry.families.items()):
        model.set_families(registry.families)
    return model


class RaceRunner:
    """Runs young models' races in one child process at a lower CPU priority, one race per attribute at a time.

    A race takes seconds of CPU. In a thread it held the GIL against the worker's event loop, and in the stream
    tests products were decided 20 to 35 s slower; in a niced process, decisions come first and races use what CPU
    is left. The process is started at the first race (``spawn``: the worker has threads) and again if it dies.
    """

    def __init__(self) -> None:
        self.running: dict[str, asyncio.Future] = {}
        self._pool: ProcessPoolExecutor | None = None

    def start(self, attribute: str, model: OnlineDawidSkene, *, settling: bool = False) -> None:
        """Start ``model``'s race when one is due (``settling``: see :data:`SETTLE_AFTER_S`) and none is running for
        ``attribute``."""
        if attribute in self.running:
            return
        job = model.young_race(settling=settling)
        if job is None:
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_race_process_init, initargs=(os.getpid(),))
        self.running[attribute] = asyncio.get_running_loop().run_in_executor(self._pool, _timed, job)

    def finished(self) -> list[tuple[str, tuple | None, float]]:
        """(attribute, result or None when the race failed, seconds) of every race done since the last call."""
        done = []
        for attribute, fut in list(self.running.items()):
            if not fut.done():
                continue
            del self.running[attribute]
            try:
                result, seconds = fut.result()
            except BrokenProcessPool as exc:
                log.error("the race process of %s died (%r); the next race starts a new one", attribute, exc)
                self._pool = None
                result, seconds = None, 0.0
            except Exception as exc:  # noqa: BLE001 - a failed race leaves the model as online EM made it
                log.error("the race of %s's young model failed: %r", attribute, exc)
                result, seconds = None, 0.0
            done.append((attribute, result, seconds))
        return done

    def close(self) -> None:
        for fut in self.running.values():
            fut.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _race_process_init(worker_pid: int) -> None:
    """Lower the race process's priority, and (Linux) have it killed with the worker: a race left running after the
    worker stopped would only take CPU from whatever runs next. A worker that died while this process was starting
    (before the death signal was asked for) is checked for after asking: seen on a loaded machine, where starting
    took over a second and the orphan ran its race to the end."""
    with contextlib.suppress(OSError):
        os.nice(10)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker_pid:
        os._exit(0)


def _timed(job: Callable[[], tuple]) -> tuple:
    started = time.perf_counter()
    return job(), time.perf_counter() - started


async def _adopt_finished_races(own: dict[str, OnlineDawidSkene], races: RaceRunner, registry: ModelRegistry,
                                counters: dict | None) -> list[tuple[str, bytes]]:
    """(attribute, serialised model) for each finished race its model adopted; starts the next race if one is due.

    A race is dropped when another learner has published a newer version since (a rebalance moved the attribute):
    only the learner that owns the records publishes over it."""
    adopted = []
    for attribute, result, seconds in races.finished():
        model = own.get(attribute)
        if model is None or result is None or registry.get(attribute).version > model.version:
            continue

        def adopt(m: OnlineDawidSkene = model, r: tuple = result) -> bytes | None:
            return m.to_bytes() if m.adopt_race(r) else None

        data = await asyncio.to_thread(adopt)
        log.info("raced %s's young model on %d items in %.1f s%s", attribute, result[2][3], seconds,
                 "" if data is not None else " (not adopted: the model moved on)")
        if data is not None:
            adopted.append((attribute, data))
            if counters is not None:
                counters["races_adopted"] = counters.get("races_adopted", 0) + 1
        races.start(attribute, model)
    return adopted


def _forget_revoked(own: dict[str, OnlineDawidSkene], last_record: dict[str, float], partition_of: dict[str, Any],
                    assigned: set) -> list[str]:
    """Drop the copies (and the settling clock) of the attributes whose ``ds-stats`` partition this learner no longer
    holds; returns them. Their finished races are then dropped too (:func:`_adopt_finished_races` needs the copy), so
    only the partition's owner publishes: a race adopted by the learner a rebalance left published an older version
    after the new owner's (seen once in a failover drill: a ds-model version going down on the topic, which a
    compacted topic would keep)."""
    gone = [a for a in own if a in partition_of and partition_of[a] not in assigned]
    for a in gone:
        del own[a]
        last_record.pop(a, None)
    return gone


def _settle_quiet_models(own: dict[str, OnlineDawidSkene], races: RaceRunner, last_record: dict[str, float]) -> None:
    """Start the settling race of every young model whose attribute has been quiet for :data:`SETTLE_AFTER_S`."""
    now = time.monotonic()
    for attribute, at in list(last_record.items()):
        if now - at >= SETTLE_AFTER_S and attribute not in races.running:
            del last_record[attribute]
            races.start(attribute, own[attribute], settling=True)


async def run_learner(registry: ModelRegistry, bootstrap: str, topic: str, group: str, model_topic: str, *,
                      embedded: bool = False, counters: dict | None = None,
                      on_publish: Callable[[str, dict], None] | None = None,
                      students: StudentLearner | None = None) -> None:
    """Consume ``topic`` forever in ``group``; after each poll, publish every changed model to ``model_topic``
    and, with ``students``, learn the records that teach them and publish those due (:mod:`streams.students`).

    The learner has its own producer: model versions must not queue behind the decision traffic of
    the worker's main producer.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.topics import STUDENT_MAX_BYTES

    timing = ({"session_timeout_ms": 2000, "heartbeat_interval_ms": 200, "rebalance_timeout_ms": 2000}
              if embedded else {})
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", **timing)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_request_size=STUDENT_MAX_BYTES if students is not None else 1048576)
    own: dict[str, OnlineDawidSkene] = {}
    last_record: dict[str, float] = {}  # attribute -> monotonic time of its last record; dropped once settled
    partition_of: dict[str, Any] = {}  # attribute -> the ds-stats partition its records come from
    races = RaceRunner()
    await consumer.start()
    await producer.start()

    async def publish(attribute: str, data: bytes) -> asyncio.Future:
        registry.offer(attribute, await asyncio.to_thread(OnlineDawidSkene.from_bytes, data))  # its M-step off the loop
        if on_publish is not None:
            on_publish(attribute, registry.get(attribute).summary())
        return await producer.send(model_topic, key=attribute.encode(), value=data)

    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            by_attribute: dict[str, list[dict]] = {}
            for tp, msgs in batches.items():
                for msg in msgs:
                    try:
                        d = orjson.loads(msg.value)
                        by_attribute.setdefault(str(d["attribute"]), []).append(d)
                        partition_of[str(d["attribute"])] = tp
                    except Exception as exc:  # noqa: BLE001 - a malformed record must not stop learning
                        log.error("ignoring malformed %s record at %d: %s", topic, msg.offset, exc)
            _forget_revoked(own, last_record, partition_of, consumer.assignment())
            futures = [await publish(a, data) for a, data in await _adopt_finished_races(own, races, registry, counters)]
            for attribute, records in sorted(by_attribute.items()):
                if students is not None:
                    await students.learn(attribute, records)
                records = [r for r in records if "teach" not in r]
                if not records:
                    continue
                model = _own_copy(own, registry, attribute)
                data = await asyncio.to_thread(learn_records, model, records, counters)
                futures.append(await publish(attribute, data))
                races.start(attribute, model)
                last_record[attribute] = time.monotonic()
            _settle_quiet_models(own, races, last_record)
            if students is not None:
                futures += await students.publish_due(producer, time.monotonic())
            for fut in futures:
                await fut  # delivered before the records learnt into them are committed
            if batches:
                await consumer.commit()
            if counters is not None:
                counters["races_running"] = len(races.running)
    finally:
        races.close()
        await consumer.stop()
        await producer.stop()
