"""`llmens sim-llm` (being built; see the open issues)."""

import typer

from streams.cli._app import app


@app.command("sim-llm")
def sim_llm() -> None:
    """Not built yet."""
    raise typer.Exit("llmens sim-llm is not built yet")
