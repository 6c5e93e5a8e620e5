"""`llmens publish` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("publish")
def publish() -> None:
    """Not built yet."""
    raise typer.Exit("llmens publish is not built yet")
