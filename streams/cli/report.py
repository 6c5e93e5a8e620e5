"""`llmens report`: confusion-matrix heatmaps and accuracy/weight bars per attribute, as PNGs and one HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli._app import app


@app.command("report")
def report(
    out: Path = typer.Option(Path("llmens-report"), "--out", "-o", file_okay=False, help="Output folder."),
    url: str = typer.Option(None, "--url", help="A running worker's model view, e.g. http://127.0.0.1:6066/model"),
    votes: Path = typer.Option(None, "--votes", exists=True, dir_okay=False,
                               help="Recorded LabelVote JSONL: fitted offline per attribute first."),
    summary: Path = typer.Option(None, "--summary", exists=True, dir_okay=False,
                                 help="JSON file {attribute: OnlineDawidSkene.summary()} (what /model serves)."),
) -> None:
    """Per attribute: every LLM's learned confusion matrix (heatmap) and accuracy/weight (bars) -> PNG + index.html.

    Give one source: --url (default http://127.0.0.1:6066/model when none is given), --votes or --summary.
    """
    from llmens_core.report import load_summaries, write_report

    if url is None and votes is None and summary is None:
        url = "http://127.0.0.1:6066/model"
    try:
        summaries = load_summaries(url=url, votes=votes, summary=summary)
    except (OSError, ValueError) as e:
        typer.echo(f"report: cannot read the model: {e}", err=True)
        raise typer.Exit(2) from None
    index = write_report(summaries, out)
    pngs = sorted(p.name for p in out.glob("*.png"))
    typer.echo(f"wrote {index} and {len(pngs)} PNG file(s) for {len(summaries)} attribute(s)")
