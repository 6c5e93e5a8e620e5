"""`llmens demo` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("demo")
def demo() -> None:
    """Not built yet."""
    raise typer.Exit("llmens demo is not built yet")
