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
    counters: str = typer.Option(None, "--counters",
                                 help="A worker's /counters page (URL or JSON file) for the LLM cost section; "
                                      "with --url, the same worker's /counters is tried."),
    student: str = typer.Option(None, "--student",
                                help="A worker's /student page (URL or JSON file): each attribute's student, what it "
                                     "decided alone and its agreement with the panel; with --url, tried there."),
) -> None:
    """Per attribute: every LLM's learned confusion matrix (heatmap) and accuracy/weight (bars) -> PNG + index.html.

    Give one source: --url (default http://127.0.0.1:6066/model when none is given), --votes or --summary.
    With a worker's counters (--counters, or the worker of --url) the page starts with the LLM cost: per LLM
    and per 1,000 decisions. With its /student page (--student, or the worker of --url) each attribute says what
    its student (issue 33) learnt and decided alone; the student's confusion matrix is among the members'.
    """
    import orjson

    from llmens_core.report import fetch_counters, fetch_json, load_summaries, write_report

    if url is None and votes is None and summary is None:
        url = "http://127.0.0.1:6066/model"
    try:
        summaries = load_summaries(url=url, votes=votes, summary=summary)
    except (OSError, ValueError) as e:
        typer.echo(f"report: cannot read the model: {e}", err=True)
        raise typer.Exit(2) from None
    cost = None
    base = url.rstrip("/") if url else ""
    source = counters or (base.rsplit("/", 1)[0] + "/counters" if base.endswith("/model") else None)
    if source is not None:
        try:
            if source.startswith(("http://", "https://")):
                cost = fetch_counters(source)
            else:
                cost = orjson.loads(Path(source).read_bytes())
        except (OSError, ValueError) as e:
            if counters is not None:  # asked for explicitly: say why it is missing
                typer.echo(f"report: cannot read the counters: {e}", err=True)
                raise typer.Exit(2) from None
    students = None
    student_src = student or (base.rsplit("/", 1)[0] + "/student" if base.endswith("/model") else None)
    if student_src is not None:
        try:
            students = (fetch_json(student_src) if student_src.startswith(("http://", "https://"))
                        else orjson.loads(Path(student_src).read_bytes()))
        except (OSError, ValueError) as e:
            if student is not None:
                typer.echo(f"report: cannot read the students: {e}", err=True)
                raise typer.Exit(2) from None
    index = write_report(summaries, out, counters=cost, students=students)
    pngs = sorted(p.name for p in out.glob("*.png"))
    typer.echo(f"wrote {index} and {len(pngs)} PNG file(s) for {len(summaries)} attribute(s)")
    if cost is not None:
        from llmens_core.costs import cost_line, cost_summary, querying_mode

        worker = cost.get("worker") or {}
        typer.echo(cost_line(cost_summary(cost.get("llm") or {}, float(worker.get("decisions", 0) or 0)),
                             querying_mode(worker)))
