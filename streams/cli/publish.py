"""`llmens publish FILE` (products) and `llmens feedback FILE` (gold labels): JSONL or CSV to their topic, keyed
by product_id. Each line is validated as the event its topic carries."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli._app import app
from streams.cli._common import BOOTSTRAP_OPTION, CONFIG_OPTION, bootstrap_of, resolve_topic, settings_for


@app.command("publish")
def publish(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Products as JSONL or CSV."),
    rate: float = typer.Option(None, "--rate", min=0.001, help="Messages per second (default: as fast as possible)."),
    fmt: str = typer.Option(None, "--format", help="jsonl or csv (default: from the file suffix, .csv = csv)."),
    topic: str = typer.Option(
        None, "--topic", "-t",
        help="Topic: a name from the settings' topics (product-updates) gets the prefix; any other is used as is.",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Publish only the first N valid products."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Publish products as ProductUpdate events (key = product_id) with a progress bar.

    JSONL: one product object per line (product_id, version, title, description, category, attributes and any
    extra fields). CSV: header product_id,version,title,description,category,attributes with attributes
    separated by ';' (empty = the category's defaults). A missing version defaults to 1. Invalid lines are
    reported with their line numbers and skipped; the exit code is then 1 (after the valid ones are sent).
    To the attribute-feedback topic each line is read as feedback instead (see `llmens feedback`).
    """
    settings = settings_for(config)
    full_topic = resolve_topic(settings, topic, "product_updates")
    kind = "feedback" if full_topic == settings.topic("attribute_feedback") else "product"
    _publish_file(file, kind, full_topic, bootstrap_of(settings, bootstrap), fmt=fmt, rate=rate, limit=limit,
                  quiet=quiet)


@app.command("feedback")
def feedback(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Gold labels as JSONL or CSV."),
    fmt: str = typer.Option(None, "--format", help="jsonl or csv (default: from the file suffix, .csv = csv)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Send human-verified labels to the attribute-feedback topic (key = product_id); the workers fold them
    into the learner and score their decisions and each LLM against them (/feedback, llmens_feedback_total).

    JSONL: one object per line with product_id, attribute, label (a class of the attribute, a synonym, or
    "none") and optional version (default: the latest decided) and source (who verified it). CSV: header
    product_id,version,attribute,label,source. Invalid lines are reported with their line numbers and
    skipped; the exit code is then 1. Feedback the workers cannot use goes to dead-letter with the reason.
    """
    settings = settings_for(config)
    _publish_file(file, "feedback", settings.topic("attribute_feedback"), bootstrap_of(settings, bootstrap),
                  fmt=fmt, rate=None, limit=None, quiet=quiet)


def _publish_file(file: Path, kind: str, full_topic: str, bs: str, *, fmt: str | None, rate: float | None,
                  limit: int | None, quiet: bool) -> None:
    """Validate every line of ``file`` as a ``kind`` ("product" or "feedback") event, send the valid ones."""
    from itertools import islice

    from rich.console import Console

    from streams.harness.publishing import ReadErrors, iter_feedback, iter_products, publish_products

    console = Console(stderr=True, soft_wrap=True)
    read = iter_feedback if kind == "feedback" else iter_products
    errors = ReadErrors()
    try:
        rows = list(read(file, fmt))
    except (ValueError, OSError, UnicodeDecodeError) as e:
        console.print(f"[red]{file}: {e}[/]")
        raise typer.Exit(2) from None
    valid = []
    for n, rec, err in rows:
        if rec is None:
            errors.items.append((n, err or "invalid"))
        else:
            valid.append(rec)
    if limit:
        valid = list(islice(valid, limit))
    for n, err in errors:
        console.print(f"[yellow]{file}:{n}: skipped: {err}[/]")
    try:
        sent = publish_products(bs, full_topic, valid, rate=rate, progress=not quiet)
    except Exception as e:  # noqa: BLE001 - delivery errors end the command with a message
        console.print(f"[red]publish failed: {e}[/]")
        raise typer.Exit(2) from None
    console.print(f"published {sent} {'feedback record' if kind == 'feedback' else 'product'}(s) to "
                  f"{full_topic} @ {bs}"
                  + (f"; {len(errors)} invalid line(s) skipped" if errors else ""))
    if errors:
        raise typer.Exit(1)
