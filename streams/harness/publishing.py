"""Read product files (JSONL or CSV) and publish them as ProductUpdate events, keyed by ``product_id``.

Used by ``llmens publish``, the demo and the benchmarks. No faust here: a plain confluent-kafka producer.

CSV columns: ``product_id,version,title,description,category,attributes`` with ``attributes`` separated by ``;``
(empty = the category's defaults). In both formats a missing ``version`` defaults to 1 (:data:`DEFAULT_VERSION`).
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmens_core.events import AttributeFeedback, EventError, ProductUpdate

__all__ = ["DEFAULT_VERSION", "CSV_COLUMNS", "FEEDBACK_CSV_COLUMNS", "ReadErrors", "iter_feedback",
           "iter_products", "PacedPublisher", "publish_products", "read_products"]

DEFAULT_VERSION = 1
CSV_COLUMNS = ("product_id", "version", "title", "description", "category", "attributes")
FEEDBACK_CSV_COLUMNS = ("product_id", "version", "attribute", "label", "source")


@dataclass
class ReadErrors:
    """Invalid input lines: ``(line number, reason)`` in file order."""

    items: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


MAX_EVENT_BYTES = 1_000_000
"""Largest product event published: under Kafka's default 1 MiB message limit and the worker's max_event_bytes."""


def _validate(rec: Any, max_bytes: int | None = MAX_EVENT_BYTES) -> dict:
    if not isinstance(rec, dict):
        raise EventError(f"a product must be a JSON object, got {type(rec).__name__}")
    if rec.get("version") is None:
        rec = {**rec, "version": DEFAULT_VERSION}
    return ProductUpdate.from_bytes(orjson.dumps(rec), max_bytes=max_bytes).model_dump(mode="json")


def _csv_record(row: dict[str, str | None]) -> dict:
    rec: dict[str, Any] = {}
    extra = row.pop(None, None)  # type: ignore[call-overload]
    if extra:
        raise EventError(f"{len(extra)} more field(s) than the header has")
    for k, v in row.items():
        if k is None:
            continue
        v = (v or "").strip()
        if k == "version":
            if v:
                try:
                    rec["version"] = int(v)
                except ValueError:
                    raise EventError(f"version: must be an integer, got {v!r}") from None
        elif k == "attributes":
            rec["attributes"] = [a.strip() for a in v.split(";") if a.strip()] or None
        elif k in ("description", "category"):
            rec[k] = v or None
        else:
            rec[k] = v
    return rec


def _validate_feedback(rec: Any, max_bytes: int | None = MAX_EVENT_BYTES) -> dict:
    if not isinstance(rec, dict):
        raise EventError(f"feedback must be a JSON object, got {type(rec).__name__}")
    return AttributeFeedback.from_bytes(orjson.dumps(rec), max_bytes=max_bytes).model_dump(mode="json")


def _csv_feedback(row: dict[str, str | None]) -> dict:
    rec = _csv_record(row)
    return {k: v for k, v in rec.items() if v not in ("", None)}


def iter_feedback(path: str | Path, fmt: str | None = None, *,
                  max_bytes: int | None = MAX_EVENT_BYTES) -> Iterator[tuple[int, dict | None, str | None]]:
    """As :func:`iter_products`, for gold labels: each line an :class:`AttributeFeedback` (product_id, attribute,
    label; optional version and source). CSV header: ``product_id,version,attribute,label,source``."""
    yield from _iter_records(path, fmt, max_bytes, _validate_feedback, _csv_feedback,
                             ("product_id", "attribute", "label"), FEEDBACK_CSV_COLUMNS)


def iter_products(path: str | Path, fmt: str | None = None, *,
                  max_bytes: int | None = MAX_EVENT_BYTES) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, product dict or None, error or None)`` for every non-blank line (CSV: data rows).

    ``fmt`` is ``jsonl`` or ``csv``; by default taken from the file suffix (``.csv`` -> csv, else jsonl).
    Products are validated as :class:`ProductUpdate` (at most ``max_bytes`` encoded) and returned in their
    wire form.
    """
    yield from _iter_records(path, fmt, max_bytes, _validate, _csv_record, ("product_id", "title"), CSV_COLUMNS)


def _iter_records(path, fmt, max_bytes, validate, from_csv, required, columns):
    path = Path(path)
    fmt = (fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")).lower()
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                yield 1, None, f"CSV header lacks {', '.join(missing)} (columns: {','.join(columns)})"
                return
            for row in reader:
                line = reader.line_num
                try:
                    yield line, validate(from_csv(row), max_bytes), None
                except EventError as e:
                    yield line, None, str(e)
        return
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r} (jsonl or csv)")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                yield n, None, f"invalid JSON: {e}"
                continue
            try:
                yield n, validate(rec, max_bytes), None
            except EventError as e:
                yield n, None, str(e)


def read_products(path: str | Path, fmt: str | None = None, errors: ReadErrors | None = None) -> Iterator[dict]:
    """Valid products of a JSONL/CSV file; invalid lines are skipped and recorded in ``errors`` when given."""
    for n, rec, err in iter_products(path, fmt):
        if rec is not None:
            yield rec
        elif errors is not None:
            errors.items.append((n, err or "invalid"))


def publish_products(
    bootstrap: str,
    topic: str,
    records: Iterable[dict],
    rate: float | None = None,
    progress: bool = True,
    *,
    total: int | None = None,
    producer_config: dict | None = None,
) -> int:
    """Send product dicts to ``topic`` keyed by ``product_id``; returns how many the broker acknowledged.

    ``rate`` caps messages per second (None = as fast as possible); ``progress`` shows a rich progress bar
    (``total`` sizes it; taken from ``len(records)`` when it has one).
    """
    from confluent_kafka import KafkaException, Producer

    if total is None and hasattr(records, "__len__"):
        total = len(records)  # type: ignore[arg-type]
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3, "enable.idempotence": True}
    conf.update(producer_config or {})
    producer = Producer(conf)
    state = {"ok": 0, "failed": 0, "error": None}

    def on_delivery(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["failed"] += 1
            state["error"] = err

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("publishing to {task.fields[topic]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), transient=False)
        bar.start()
        task = bar.add_task("publish", total=total, topic=topic, speed="")
    start = time.monotonic()
    try:
        sent = 0
        for rec in records:
            if rate:
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    producer.poll(0)
                    time.sleep(wait)
            value = orjson.dumps(rec)
            key = str(rec["product_id"]).encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:  # e.g. larger than the broker takes: report it, send the rest
                    state["failed"] += 1
                    state["error"] = f"{rec['product_id']}: {exc.args[0].str() if exc.args else exc}"
                    break
            producer.poll(0)
            sent += 1
            if bar is not None and (sent % 100 == 0 or rate):
                el = time.monotonic() - start
                bar.update(task, completed=sent, speed=f"{sent / el:,.0f}/s" if el > 0 else "")
        remaining = producer.flush(30)
        if bar is not None:
            el = time.monotonic() - start
            bar.update(task, completed=sent, total=total or sent, speed=f"{sent / el:,.0f}/s" if el > 0 else "")
        if remaining:
            raise RuntimeError(f"{remaining} message(s) not delivered within 30 s")
        if state["failed"]:
            raise RuntimeError(f"{state['failed']} message(s) failed: {state['error']}")
        return state["ok"]
    finally:
        if bar is not None:
            bar.stop()


class PacedPublisher(threading.Thread):
    """Publishes product dicts at ``rate`` per second in the background, counting only what the broker acked.

    One idempotent producer (acks=all) for the whole stream. ``sent`` is the number of products whose
    delivery the broker acknowledged, never the number handed to the client: a drill that counted products
    as published when ``flush`` merely returned (a fresh producer per batch, its unsent messages dropped with
    it) could not tell a product lost by the stream from one never written. A failed delivery (a broker
    restarting, a leader election) is produced again until ``deadline_s`` after the last product was
    handed over; what is still unacknowledged then is in ``unacked`` and ``error`` says so.
    """

    def __init__(self, bootstrap: str, topic: str, products: list[dict], rate: float, *,
                 deadline_s: float = 600.0, producer_config: dict | None = None) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.products, self.rate = bootstrap, topic, products, rate
        self.deadline_s = deadline_s
        self.conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 0, "enable.idempotence": True,
                     "acks": "all", "message.timeout.ms": 120_000, **(producer_config or {})}
        self.sent = 0
        self.handed = 0
        self.redelivered = 0
        self.failures: list[str] = []
        """Delivery errors seen (each was produced again), for the drill's log."""
        self.unacked: set[int] = set()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._retry: list[int] = []
        self._fatal = False

    def _on_delivery(self, i: int):
        def report(err, _msg) -> None:
            with self._lock:
                if err is None:
                    if i in self.unacked:
                        self.unacked.discard(i)
                        self.sent += 1
                else:
                    self.failures.append(str(err))
                    self._retry.append(i)
                    self._fatal = self._fatal or err.fatal()
        return report

    def _produce(self, producer: Any, i: int) -> None:
        p = self.products[i]
        while True:
            try:
                producer.produce(self.topic, key=str(p.get("product_id", "")).encode(), value=orjson.dumps(p),
                                 on_delivery=self._on_delivery(i))
                return
            except BufferError:
                producer.poll(0.05)

    def _produce_retries(self, producer: Any) -> Any:
        """Produce the failed deliveries again; returns the producer to go on with (a new one after a fatal
        error: an idempotent producer that lost its sequence refuses every later message)."""
        from confluent_kafka import Producer

        with self._lock:
            retry, self._retry = self._retry, []
            if self._fatal:
                self._fatal = False
                retry = sorted(i for i in self.unacked if i < self.handed)
                producer = Producer(self.conf)
        for i in retry:
            self.redelivered += 1
            self._produce(producer, i)
        return producer

    def run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer(self.conf)
            start, step = time.monotonic(), max(1, int(self.rate // 20))
            with self._lock:
                self.unacked = set(range(len(self.products)))
            for i in range(len(self.products)):
                self._produce(producer, i)
                self.handed = i + 1
                if self.handed % step == 0:
                    producer.poll(0)
                    producer = self._produce_retries(producer)
                    time.sleep(max(0.0, start + self.handed / self.rate - time.monotonic()))
            deadline = time.monotonic() + self.deadline_s
            while time.monotonic() < deadline:
                producer.flush(1.0)
                producer = self._produce_retries(producer)
                with self._lock:
                    if not self.unacked and not self._retry:
                        return
            self.error = RuntimeError(f"{len(self.unacked)} product(s) never acknowledged by the broker "
                                      f"({len(self.failures)} delivery errors, the last: "
                                      f"{self.failures[-1] if self.failures else 'none'})")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
