"""`llmens tail` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("tail")
def tail() -> None:
    """Not built yet."""
    raise typer.Exit("llmens tail is not built yet")
