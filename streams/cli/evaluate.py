"""`llmens evaluate`: score aggregation methods on answers/truth CSVs (thin wrapper over llmens_core)."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from streams.cli._app import app


@app.command("evaluate")
def evaluate(
    answers: Path = typer.Option(
        ..., "--answers", exists=True, dir_okay=False, help="CSV with header item,worker,label"
    ),
    truth: Path = typer.Option(
        ..., "--truth", exists=True, dir_okay=False, help="CSV with header item,label"
    ),
    method: str = typer.Option(
        "",
        "--method",
        help="Comma-separated: default,mv,wmv,onecoin,ds,online (all when empty, default first)",
    ),
    passes: int = typer.Option(1, "--passes", min=1, help="Passes of the online method"),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed of the online method"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Online mini-batch size (items)"),
    families: str = typer.Option(
        "auto",
        "--families",
        help="auto|prefix|none: prefix gives default/online the name part before '|' as a family hint "
        "(dependence is measured from the votes either way); auto and none: no hint",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per method per line"),
) -> None:
    """Accuracy, items scored and fit seconds per aggregation method."""
    from llmens_core.aggregation.evaluate import evaluate as run

    methods = [m.strip() for m in method.split(",") if m.strip()] or None
    if families not in ("auto", "prefix", "none"):
        raise typer.BadParameter("--families must be auto, prefix or none")
    try:
        rows = run(
            answers, truth, methods, passes=passes, seed=seed, batch_size=batch_size, families=families
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if not rows or all(r["items_scored"] == 0 for r in rows):
        typer.echo(f"error: no item of {answers} has a label in {truth}: nothing to score (check the item ids)",
                   err=True)
        raise typer.Exit(2)
    if as_json:
        for r in rows:
            typer.echo(orjson.dumps(r).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{answers.parent.name}: {answers.name} vs {truth.name}")
    for col in ("method", "accuracy", "ties split", "items scored", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        split = f"{r['accuracy_ties_split']:.4f}" if "accuracy_ties_split" in r else ""
        table.add_row(r["method"], f"{r['accuracy']:.4f}", split, str(r["items_scored"]), f"{r['seconds']:.3f}")
    if any("accuracy_ties_split" in r for r in rows):
        typer.echo("ties split: majority vote's accuracy with its ties broken at random (expected), not by label order")
    Console().print(table)
