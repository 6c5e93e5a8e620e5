"""Read product files (JSONL or CSV) and publish them as ProductUpdate events, keyed by ``product_id``.

Used by ``llmens publish``, the demo and the benchmarks. No faust here: a plain confluent-kafka producer.

CSV columns: ``product_id,version,title,description,category,attributes`` with ``attributes`` separated by ``;``
(empty = the category's defaults). In both formats a missing ``version`` defaults to 1 (:data:`DEFAULT_VERSION`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmens_core.events import AttributeFeedback, EventError, ProductUpdate

__all__ = ["DEFAULT_VERSION", "CSV_COLUMNS", "FEEDBACK_CSV_COLUMNS", "ReadErrors", "iter_feedback",
           "iter_products", "publish_products", "read_products"]

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
