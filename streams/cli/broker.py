"""`llmens broker`: a local single-node broker for trying llmens without Docker (not for production)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from streams.cli._app import app


@app.command("broker")
def broker(
    port: int = typer.Option(9092, "--port", help="Port of the broker on 127.0.0.1 (0 = any free port)."),
    kind: str = typer.Option(None, "--kind", help="kafka or tansu (default: Apache Kafka where Java 17+ is present)."),
    log_dir: Path = typer.Option(Path(".llmens-broker"), "--log-dir", help="Kafka's log directory (kept between runs)."),
) -> None:
    """LOCAL TOOL: run Apache Kafka (KRaft, from its Maven jars) or Tansu on loopback until Ctrl-C.

    With `llmens sim-llm` and `llmens worker --config deploy/llmens.local.yaml` this is the whole system on
    one machine. The first Kafka start fetches the pinned jars with Maven once (~/.cache/llmens).
    """
    from streams.harness.brokers import BrokerError
    from streams.harness.brokers.choice import start_local_broker

    try:
        b = start_local_broker(log_dir, kind, port=port)
    except (BrokerError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{b.name} {b.version} at {b.bootstrap} (log dir {log_dir}); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
