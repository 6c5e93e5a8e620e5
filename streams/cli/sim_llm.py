"""`llmens sim-llm`: simulated OpenAI-compatible LLMs on loopback (a test and demo tool)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from streams.cli._app import app


@app.command("sim-llm")
def sim_llm(
    config: Path | None = typer.Option(None, "--config", help="Simulator YAML/JSON config; default: the built-in 5 models."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (keep it on loopback)."),
    port: int = typer.Option(8089, "--port", help="Port to listen on (0 = any free port)."),
    products: Path | None = typer.Option(None, "--products", help="Products JSONL with gold `attributes` (confusion mode)."),
    replay: Path | None = typer.Option(None, "--replay", help="Predictions JSONL to replay (switches to replay mode)."),
) -> None:
    """TEST/DEMO TOOL: serve simulated LLMs (not real ones) speaking the OpenAI chat API on /v1, and the
    OpenAI, Anthropic and Gemini (/v1beta) batch APIs that `llmens backfill` uses.

    Each simulated model answers from gold labels through its own confusion matrix (or replays
    recorded answers), with configurable latency and faults (429, 500, hangs, malformed JSON).
    """
    from llmens_core.llm.simulator import SIM_KEY, load_sim_config, start_simulator

    cfg = load_sim_config(config)
    update: dict = {}
    if products is not None:
        update["products"] = str(products)
    if replay is not None:
        update["mode"] = "replay"
        update["predictions"] = str(replay)
    if update:
        cfg = cfg.model_copy(update=update)

    async def serve() -> None:
        runner, bound = await start_simulator(cfg, host, port)
        names = ", ".join(runner.app[SIM_KEY].models)
        typer.echo(f"llmens sim-llm (test/demo tool) on http://{host}:{bound}/v1  models: {names}", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
