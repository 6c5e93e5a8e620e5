"""`llmens worker`: run one stream worker (scale out by starting more with the same settings)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from streams.cli._app import app


@app.command("worker")
def worker(
    config: Path = typer.Option(None, "--config", "-c", help="TOML/YAML settings file (also LLMENS_CONFIG)."),
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (LLMENS_KAFKA__BOOTSTRAP)."),
    embedded: bool = typer.Option(None, "--embedded/--no-embedded",
                                  help="Local single-broker profile (fast group joins): tests and demos only."),
    data_dir: Path = typer.Option(None, help="RocksDB tables and response cache (LLMENS_DATA_DIR)."),
    web_port: int = typer.Option(None, help="HTTP port for /metrics, /healthz, /model (LLMENS_WEB_PORT)."),
    loglevel: str = typer.Option("info", help="crit, error, warn, info or debug."),
) -> None:
    """Consume product updates, ask the configured LLMs, decide attributes, learn LLM reliabilities."""
    from streams.cli._common import settings_for

    settings = settings_for(config, data_dir=data_dir, web_port=web_port)
    if bootstrap:
        settings.kafka.bootstrap = bootstrap
    if embedded is not None:
        settings.kafka.embedded = embedded
    from streams.cli._common import require_broker

    require_broker(settings.kafka.bootstrap)
    if not settings.llms:
        raise typer.BadParameter("no LLM endpoints configured: add an `llms:` list to the settings file",
                                 param_hint="--config")
    run_worker(settings, loglevel)


def run_worker(settings, loglevel: str = "info") -> None:
    """Create the topics if missing, then run the faust worker until it is stopped (SIGTERM/SIGINT)."""
    from faust.worker import Worker as FaustWorker

    from streams.app import create_app
    from streams.topics import commit_start_offsets, ensure_topics

    logging.basicConfig(level=loglevel.upper() if loglevel != "warn" else "WARNING")
    use_uvloop()
    ensure_topics(settings)
    if settings.kafka.tansu:
        commit_start_offsets(settings)
    faust_app, _ = create_app(settings)

    class QuietWorker(FaustWorker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # faust's terminal spinner handler sets the root logger to DEBUG at levels >= WARN, so every
            # debug call in faust and aiokafka built a log record (measured: 4% of the worker's main thread).
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    QuietWorker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


def use_uvloop() -> bool:
    """Run the worker on uvloop when installed (measured 10-15% more events/s here)."""
    try:
        import asyncio

        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
