"""`llmens publish FILE`: JSONL or CSV products to the product-updates topic, keyed by product_id."""

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
    """
    from itertools import islice

    from rich.console import Console

    from streams.harness.publishing import ReadErrors, iter_products, publish_products

    console = Console(stderr=True, soft_wrap=True)
    settings = settings_for(config)
    bs = bootstrap_of(settings, bootstrap)
    full_topic = resolve_topic(settings, topic, "product_updates")
    errors = ReadErrors()
    try:
        rows = list(iter_products(file, fmt))
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
    console.print(f"published {sent} product(s) to {full_topic} @ {bs}"
                  + (f"; {len(errors)} invalid line(s) skipped" if errors else ""))
    if errors:
        raise typer.Exit(1)
