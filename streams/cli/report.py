"""`llmens report` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("report")
def report() -> None:
    """Not built yet."""
    raise typer.Exit("llmens report is not built yet")
