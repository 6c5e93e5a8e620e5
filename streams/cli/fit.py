"""`llmens fit`: fit the aggregation model offline on recorded votes and publish it as the cold start."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli._app import app
from streams.cli._common import BOOTSTRAP_OPTION, CONFIG_OPTION


@app.command("fit")
def fit(
    votes: Path = typer.Argument(..., exists=True, dir_okay=False,
                                 help="LabelVote JSONL (or llm-votes records: one list of votes per line)."),
    publish: bool = typer.Option(True, "--publish/--dry-run", help="Publish to ds-model, or only print."),
    config: Path = CONFIG_OPTION,
    bootstrap: str = BOOTSTRAP_OPTION,
) -> None:
    """Fit the default aggregator per attribute on past votes; publish each model to ds-model.

    Workers adopt a model whose version is newer than theirs, so the published versions are set above the
    versions currently on the topic: a fitted model replaces the running one, and the stream learns on from it.
    """
    from rich.console import Console

    from llmens_core.aggregation.offline import fit_votes
    from llmens_core.schema import AttributeSchema
    from streams.cli._common import settings_for
    from streams.harness.publishing_models import current_versions, publish_models

    console = Console()
    settings = settings_for(config)
    if bootstrap:
        settings.kafka.bootstrap = bootstrap
    schema = AttributeSchema.load(settings.attributes_file)
    classes = {a: list(schema[a].classes) for a in schema}
    models = fit_votes(votes, classes=classes)
    for attr, m in models.items():
        s = m.summary()
        acc = ", ".join(f"{w} {a:.2f}" for w, a in sorted(s.get("accuracy", {}).items(), key=lambda x: -x[1]))
        console.print(f"[bold]{attr}[/bold]: {s['n_items']:.0f} items; accuracy {acc}")
    if not publish:
        return
    topic = settings.topic("ds_model")
    versions = current_versions(settings.kafka.bootstrap, topic)
    for attr, m in models.items():
        m.version = versions.get(attr, 0) + 1
    publish_models(settings.kafka.bootstrap, topic, models)
    console.print(f"published {len(models)} models to {topic}")
