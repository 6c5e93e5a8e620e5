"""`llmens worker` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("worker")
def worker() -> None:
    """Not built yet."""
    raise typer.Exit("llmens worker is not built yet")
