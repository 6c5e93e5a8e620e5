"""Helpers shared by the operator commands (publish, tail, lag, report): settings and topic names."""

from __future__ import annotations

from pathlib import Path

import typer

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", exists=True, dir_okay=False, envvar="LLMENS_CONFIG",
    help="Settings file (YAML or TOML); environment LLMENS_* and flags override it.",
)
BOOTSTRAP_OPTION = typer.Option(
    None, "--bootstrap", "-b", help="Kafka bootstrap servers (default: kafka.bootstrap from the settings).",
)


def settings_for(config: Path | None):
    from streams.settings import load_settings

    return load_settings(config)


def bootstrap_of(settings, bootstrap: str | None) -> str:
    return bootstrap or settings.kafka.bootstrap


def resolve_topic(settings, name: str | None, default_field: str) -> str:
    """Full topic name: a TopicNames field (``product_attributes``) or its value (``product-attributes``) gets the
    deployment prefix; anything else is taken as the full Kafka topic name."""
    if not name:
        return settings.topic(default_field)
    fields = {f: getattr(settings.topics, f) for f in type(settings.topics).model_fields
              if isinstance(getattr(settings.topics, f), str)}
    if name in fields:
        return settings.topic(name)
    if name in fields.values():
        return settings.kafka.topic(name)
    return name
