"""The `llmens` command line: thin wrappers over `llmens_core` and `streams`.

Each sub-command lives in its own module and registers itself on :data:`streams.cli._app.app`.
"""

from streams.cli import (  # noqa: F401  (imported for their @app.command registrations)
    backfill,
    broker,
    demo,
    evaluate,
    fit,
    lag,
    publish,
    report,
    sim_llm,
    tail,
    worker,
)
from streams.cli._app import app


def main() -> None:
    app()
