"""`llmens lag` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("lag")
def lag() -> None:
    """Not built yet."""
    raise typer.Exit("llmens lag is not built yet")
