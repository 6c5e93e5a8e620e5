"""`llmens evaluate` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("evaluate")
def evaluate() -> None:
    """Not built yet."""
    raise typer.Exit("llmens evaluate is not built yet")
