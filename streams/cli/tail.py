"""`llmens tail`: read decisions (or any llmens topic) as pretty lines or JSON lines."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import typer

from streams.cli._app import app
from streams.cli._common import BOOTSTRAP_OPTION, CONFIG_OPTION, bootstrap_of, resolve_topic, settings_for


def _pretty(value: bytes | None, topic: str) -> str:
    import orjson
    from rich.markup import escape

    from llmens_core.events import AttributeDecision, DeadLetter, EventError

    if value is None:
        return "[dim](tombstone)[/]"
    try:
        d = AttributeDecision.from_bytes(value)
        color = "green" if d.confidence >= 0.9 else "yellow" if d.confidence >= 0.7 else "red"
        votes = " ".join(f"{escape(k)}={escape(str(v))}" for k, v in sorted(d.votes.items()))
        return (f"[bold]{escape(d.product_id)}[/] v{d.version} [cyan]{escape(d.attribute)}[/] = "
                f"[bold]{escape(str(d.value))}[/] [{color}]{d.confidence:.2f}[/] {d.reason}"
                f"{f' r{d.revision}' if d.revision else ''} model v{d.model_version} [dim]{votes}[/]")
    except EventError:
        pass
    try:
        dl = DeadLetter.from_bytes(value)
        return (f"[red]dead letter[/] {escape(dl.source_topic)}[{dl.partition}]@{dl.offset}: "
                f"{escape(dl.error)} [dim]{escape(dl.original[:120].decode(errors='replace'))}[/]")
    except EventError:
        pass
    try:
        return escape(orjson.dumps(orjson.loads(value)).decode())
    except orjson.JSONDecodeError:
        return escape(repr(value[:200]))


@app.command("tail")
def tail(
    topic: str = typer.Option(
        None, "--topic", "-t",
        help="product-attributes (default), attribute-review, llm-votes, dead-letter, product-updates... "
        "(gets the settings' prefix) or any full topic name.",
    ),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    group: str = typer.Option(
        None, "--group", "-g",
        help="Read as this consumer group and commit (resumes where it stopped). Default: no group, no commits.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record per line (the record as is)."),
    max_records: int = typer.Option(None, "--max", "-n", min=1, help="Stop after N records."),
    timeout: float = typer.Option(None, "--timeout", help="Stop after S seconds without a new record."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Print the records of a topic as they arrive: new ones by default, all with --from-beginning.

    The start position for "new" is the true end of each partition (read from a fetch response, which the
    embedded broker reports correctly), not auto.offset.reset=latest.
    """
    from confluent_kafka import Consumer, TopicPartition
    from rich.console import Console

    settings = settings_for(config)
    bs = bootstrap_of(settings, bootstrap)
    full_topic = resolve_topic(settings, topic, "product_attributes")
    conf = {
        "bootstrap.servers": bs, "log_level": 3, "auto.offset.reset": "earliest",
        "group.id": group or f"llmens-tail-{uuid.uuid4().hex[:8]}", "enable.auto.commit": bool(group),
    }
    if settings.kafka.embedded:
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    consumer = Consumer(conf)

    try:
        if group:
            consumer.subscribe([full_topic], on_assign=lambda c, parts: c.assign(
                _start_positions(c, parts, bs, group=group, from_beginning=from_beginning)))
        else:
            md = consumer.list_topics(full_topic, timeout=10).topics.get(full_topic)
            if md is None or md.error is not None:
                Console(stderr=True).print(f"[red]topic {full_topic} not found at {bs}[/]")
                raise typer.Exit(2)
            parts = [TopicPartition(full_topic, p) for p in sorted(md.partitions)]
            consumer.assign(_start_positions(consumer, parts, bs, group=None, from_beginning=from_beginning))
        if not as_json:
            Console(stderr=True, soft_wrap=True).print(f"[dim]tailing {full_topic} @ {bs} (Ctrl-C to stop)[/]")
        _print_records(consumer, full_topic, as_json=as_json, max_records=max_records, timeout=timeout)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _start_positions(consumer, parts: list, bs: str, *, group: str | None, from_beginning: bool) -> list:
    """Where to start each partition: the group's commit, else the beginning or the true end."""
    from confluent_kafka import OFFSET_BEGINNING

    from streams.offsets import end_offsets

    todo = parts
    if group:
        committed = consumer.committed(parts, timeout=10)
        have = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}
        todo = [tp for tp in parts if (tp.topic, tp.partition) not in have]
        for tp in parts:
            if (tp.topic, tp.partition) in have:
                tp.offset = have[(tp.topic, tp.partition)]
    if from_beginning:
        for tp in todo:
            tp.offset = OFFSET_BEGINNING
    elif todo:
        ends = end_offsets(bs, [(tp.topic, tp.partition) for tp in todo])
        for tp in todo:
            tp.offset = ends[(tp.topic, tp.partition)]
    return parts


def _print_records(consumer, topic: str, *, as_json: bool, max_records: int | None, timeout: float | None) -> None:
    import orjson
    from rich.console import Console

    console = Console(highlight=False)
    one_line = not console.is_terminal  # piped to a file or grep: one record a line, never wrapped at 80
    seen, last = 0, time.monotonic()
    while max_records is None or seen < max_records:
        msg = consumer.poll(0.2)
        if msg is None:
            if timeout is not None and time.monotonic() - last >= timeout:
                break
            continue
        if msg.error():
            continue
        last = time.monotonic()
        seen += 1
        if as_json:
            value = msg.value()
            try:
                typer.echo(orjson.dumps(orjson.loads(value)).decode() if value is not None else "null")
            except orjson.JSONDecodeError:
                typer.echo(orjson.dumps({"_raw": value.decode(errors="replace")}).decode())
        else:
            console.print(_pretty(msg.value(), topic), soft_wrap=one_line)
