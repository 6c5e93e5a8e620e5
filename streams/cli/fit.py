"""`llmens fit` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("fit")
def fit() -> None:
    """Not built yet."""
    raise typer.Exit("llmens fit is not built yet")
