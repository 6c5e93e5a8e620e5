"""Helpers shared by the operator commands (publish, tail, lag, report): settings and topic names."""

from __future__ import annotations

from pathlib import Path

import typer

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", dir_okay=False, envvar="LLMENS_CONFIG",
    help="Settings file (YAML or TOML); environment LLMENS_* and flags override it.",
)
BOOTSTRAP_OPTION = typer.Option(
    None, "--bootstrap", "-b", help="Kafka bootstrap servers (default: kafka.bootstrap from the settings).",
)


def settings_for(config: Path | None, **overrides):
    """The settings, or exit 2 with one message naming the file, line and field of a bad settings file."""
    from streams.settings import SettingsFileError, load_settings

    try:
        return load_settings(config, **overrides)
    except SettingsFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def bootstrap_of(settings, bootstrap: str | None, *, check: bool = True) -> str:
    """The bootstrap servers to use; with ``check``, exit with one clear message when none answers."""
    servers = bootstrap or settings.kafka.bootstrap
    if check:
        require_broker(servers)
    return servers


def broker_answers(servers: str, timeout_s: float = 3.0) -> bool:
    """True when at least one of the comma-separated ``host:port`` servers accepts a TCP connection."""
    import socket

    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port or 9092)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def require_broker(servers: str) -> None:
    """Exit 2 with one line when no broker answers at ``servers`` (instead of librdkafka's retry flood)."""
    if not broker_answers(servers):
        typer.echo(f"error: no Kafka broker answers at {servers} (set --bootstrap, LLMENS_KAFKA__BOOTSTRAP or "
                   "kafka.bootstrap in the settings; `llmens demo` starts a local one)", err=True)
        raise typer.Exit(2)


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
