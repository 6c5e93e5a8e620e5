"""`llmens lag`: consumer lag per group, topic and partition with a Burrow-style status."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import typer

from streams.cli._app import app
from streams.cli._common import BOOTSTRAP_OPTION, CONFIG_OPTION, bootstrap_of, settings_for

_STYLE = {"OK": "green", "WARNING": "yellow", "STALLED": "red", "STOPPED": "bold red", "UNKNOWN": "dim"}


def _table(rows, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("group", "topic", "partition", "committed", "end", "lag", "status"):
        # names are folded onto a second line in a narrow terminal, never cut ("llmens.attrib…")
        table.add_column(col, justify="left" if col in ("group", "topic", "status") else "right",
                         overflow="fold" if col in ("group", "topic") else "ellipsis")
    for r, status in rows:
        table.add_row(
            r.group, r.topic, str(r.partition), "-" if r.committed is None else str(r.committed),
            str(r.end) + ("" if r.end_source == "fetch" else "*"), "-" if r.lag is None else str(r.lag),
            f"[{_STYLE[status.value]}]{status.value}[/]",
        )
    if not rows:
        table.caption = "no committed offsets found for the selected groups/topics"
    elif any(r.end_source != "fetch" for r, _ in rows):
        table.caption = "* end offset from ListOffsets (no fetch answer in time; may be low on the embedded broker)"
    return table


@app.command("lag")
def lag(
    group: list[str] = typer.Option(None, "--group", "-g", help="Consumer group (repeatable; default: all groups)."),
    topic: list[str] = typer.Option(
        None, "--topic", "-t", help="Full topic name (repeatable; default: every topic the group committed on)."
    ),
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep sampling every --interval seconds until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", "-i", min=0.1, help="Seconds between samples."),
    samples: int = typer.Option(
        3, "--samples", "-n", min=1,
        help="Samples to take without --watch; the status needs >= 2 to see movement (1 gives UNKNOWN when "
        "lag > 0), >= 3 for WARNING.",
    ),
    window: int = typer.Option(10, "--window", min=2, help="Samples per partition the status is judged over."),
    stopped_after: float = typer.Option(
        300.0, "--stopped-after", help="Seconds without a committed-offset movement (lag > 0) that mean STOPPED."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per partition per line (per sample)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the broker per request."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Committed offset, end offset, lag and status (OK / WARNING / STALLED / STOPPED / UNKNOWN) per partition.

    End offsets come from a fetch response, so they are right on the embedded broker (whose ListOffsets
    under-reports batched topics) as well as on Apache Kafka. Status follows Burrow's rules over the last
    --window samples: lag 0 in any sample is OK; a committed offset that does not move while lag > 0 is
    STALLED (STOPPED after --stopped-after seconds, or with no commit at all); lag growing in every sample is
    WARNING.
    """
    from rich.console import Console

    from streams.lag import LagMonitor

    settings = settings_for(config)
    bs = bootstrap_of(settings, bootstrap)
    monitor = LagMonitor(bs, group or None, topic or None, window=window, stopped_after_s=stopped_after,
                         timeout=timeout)
    console = Console()
    if not console.is_terminal:  # piped: as wide as the table needs, one partition a line
        console = Console(width=10_000)
    n = 0
    try:
        if watch and not as_json:
            from rich.live import Live

            with Live(console=console, auto_refresh=False) as live:
                while True:
                    rows = monitor.sample()
                    live.update(_table(rows, f"consumer lag @ {bs}  ({time.strftime('%H:%M:%S')})"), refresh=True)
                    time.sleep(interval)
        while True:
            rows = monitor.sample()
            n += 1
            last = not watch and n >= samples
            if as_json:
                for r, status in rows:
                    typer.echo(orjson.dumps({**r.to_dict(), "status": status.value}).decode())
            elif last:
                console.print(_table(rows, f"consumer lag @ {bs}"))
            if last:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except Exception as e:  # noqa: BLE001 - broker errors become a readable message
        from confluent_kafka import KafkaException

        if isinstance(e, KafkaException):
            console.print(f"[red]lag: {e}[/]")
            raise typer.Exit(2) from None
        raise
