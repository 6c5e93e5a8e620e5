"""`llmens backfill FILE`: label a catalogue through the providers' batch APIs (half price), then publish."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli._app import app
from streams.cli._common import BOOTSTRAP_OPTION, CONFIG_OPTION, bootstrap_of, settings_for


@app.command("backfill")
def backfill(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Products as JSONL or CSV (as `publish`)."),
    state: Path = typer.Option(..., "--state", file_okay=False,
                               help="Directory of the backfill's state: rerun with the same one to resume."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Requests per batch."),
    max_open: int = typer.Option(16, "--max-open", min=1, help="Batches open at a time."),
    poll_s: float = typer.Option(30.0, "--poll", min=0.0, help="Seconds between polls of the open batches."),
    max_tries: int = typer.Option(3, "--max-tries", min=1,
                                  help="Failed lines of one request before it goes to dead-letter."),
    publish: bool = typer.Option(True, "--publish/--dry-run",
                                 help="Publish decisions, models and dead letters, or only write them to --state."),
    quick_fit: bool = typer.Option(False, "--quick-fit",
                                   help="Fit with a smaller model search (about 20x less CPU; tests, quick looks)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Ask every LLM of the settings about every product through its batch API (OpenAI Batch, Anthropic Message
    Batches, Gemini batch mode) at the batch price (`batch_discount` per LLM, default 0.5), fit each attribute's
    model on all the votes at once, and publish the decisions to product-attributes and the models to ds-model,
    as the stream and `llmens fit` do. Killed and rerun with the same --state, it polls the batches it had
    submitted and asks again only what no finished batch answered. Lines that fail are asked again up to
    --max-tries times, then dead-lettered with the reason.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmens_core.backfill import BackfillOptions, BackfillProgress
    from llmens_core.backfill.apis import BatchApiError
    from llmens_core.backfill.decide import QUICK_FIT
    from llmens_core.costs import cost_line
    from streams.backfill import backfill_catalogue

    console = Console(stderr=True, soft_wrap=True)
    settings = settings_for(config)
    if publish:
        settings.kafka.bootstrap = bootstrap_of(settings, bootstrap)
    opts = BackfillOptions(batch_size=batch_size, max_open=max_open, poll_s=poll_s, max_tries=max_tries)
    with Progress(TextColumn("[bold]backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, disable=quiet) as bar:
        task = bar.add_task("", total=None)

        def show(p: BackfillProgress) -> None:
            bar.update(task, total=p.total, completed=p.answered + p.dead,
                       description=f"{p.open_batches} batch(es) open, {p.in_flight} in flight, {p.dead} dead")

        try:
            s = backfill_catalogue(file, state, settings, opts, publish=publish, on_progress=show,
                                   fit_options=QUICK_FIT if quick_fit else None)
        except ValueError as e:
            console.print(f"[red]{e}[/]")
            raise typer.Exit(2) from None
        except BatchApiError as e:
            console.print(f"[red]a batch API kept failing: {e}[/]\nthe state in {state} is kept: "
                          "run the same command again to resume")
            raise typer.Exit(3) from None
    for n, err in s["invalid_lines"]:
        console.print(f"[yellow]{file}:{n}: skipped: {err}[/]")
    console.print(f"{s['products']} products, {s['requests']} requests ({s['answered']} answered, "
                  f"{s['dead_requests']} dead); {s['decisions']} decisions on {s['decided_products']} products; "
                  f"{s['dead_letters']} dead letter(s)")
    console.print(cost_line(s["cost"], "batch APIs"))
    if s["already_published"]:
        console.print(f"outputs already published from {state}; nothing sent again")
    for topic, n in s["sent"].items():
        console.print(f"sent {n} to {topic}")
    if s["invalid_lines"]:
        raise typer.Exit(1)
