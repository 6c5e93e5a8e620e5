"""`llmens demo`: the whole pipeline on this machine with a local broker and simulated LLMs."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli._app import app


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("llmens-demo-report"), help="Where to write the report (PNG + HTML)."),
    products: Path = typer.Option(None, help="Products JSONL with gold attributes (default: shipped catalogue)."),
    broker: str = typer.Option(None, "--broker", help="kafka or tansu (default: Apache Kafka where Java 17+ is present)."),
    llms: Path = typer.Option(None, help="Settings file with real LLM endpoints, e.g. deploy/llmens.real.yaml."),
    limit: int = typer.Option(None, help="Only the first N products."),
    timeout: float = typer.Option(150.0, help="Seconds to wait for every decision."),
) -> None:
    """Run broker, simulated LLMs and a worker; publish the demo catalogue; print accuracy, weights, lag."""
    from streams.harness.demo import run_demo

    run_demo(out_dir=out, products=products, broker=broker, llms=llms, limit=limit, timeout_s=timeout)
