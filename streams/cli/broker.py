"""`llmens broker`: a local broker (one node, or a three-node KRaft cluster) for trying llmens without Docker.

Not for production. SIGTERM (what a service manager sends) stops the Kafka processes as Ctrl-C does.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from streams.cli._app import app


def _interrupt_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt so the ``finally`` below stops the JVMs (their own sessions);
    returns the handler it replaced."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, on_sigterm)


@app.command("broker")
def broker(
    port: int = typer.Option(9092, "--port", help="Port of the broker on 127.0.0.1 (0 = any free port)."),
    kind: str = typer.Option(None, "--kind", help="kafka or tansu (default: Apache Kafka where Java 17+ is present)."),
    nodes: int = typer.Option(1, "--nodes", min=1, max=5,
                              help="Apache Kafka nodes; 3 = a KRaft cluster (broker+controller each), replication 3."),
    log_dir: Path = typer.Option(Path(".llmens-broker"), "--log-dir", help="Kafka's log directory (kept between runs)."),
) -> None:
    """LOCAL TOOL: run Apache Kafka (KRaft, from its Maven jars) or Tansu on loopback until Ctrl-C or SIGTERM.

    With `llmens sim-llm` and `llmens worker --config deploy/llmens.local.yaml` this is the whole system on
    one machine. The first Kafka start fetches the pinned jars with Maven once (~/.cache/llmens). With
    --nodes 3 the first node listens on --port, the others on free ports; use the printed bootstrap list and
    `topics.replication: 3` in the settings.
    """
    from streams.harness.brokers import BrokerError
    from streams.harness.brokers.choice import start_local_broker

    previous = _interrupt_on_sigterm()
    b = None
    try:
        b = start_local_broker(log_dir, kind, port=port, nodes=nodes)
        typer.echo(f"{b.name} {b.version} at {b.bootstrap} (log dir {log_dir}); Ctrl-C stops it", err=False)
        while True:
            time.sleep(3600)
    except (BrokerError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    finally:
        if b is not None:
            b.stop()
        signal.signal(signal.SIGTERM, previous)
