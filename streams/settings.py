"""One settings source for every `llmens` command: flags > environment `LLMENS_*` > config file > defaults.

The config file (TOML or YAML) is named by ``--config`` or ``LLMENS_CONFIG``. Nested fields use
``__`` in the environment, e.g. ``LLMENS_KAFKA__BOOTSTRAP=broker:9092``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from llmens_core.llm.config import EndpointConfig
from streams.settings_errors import SettingsFileError, parse_error, validation_error

__all__ = ["AdaptiveSettings", "AggregationSettings", "KafkaSettings", "Settings", "StudentSettings", "TopicNames",
           "load_settings", "SettingsFileError", "parse_config_bytes", "read_config_file"]


class TopicNames(BaseModel):
    """Topic names (before the deployment prefix) and partition counts."""

    product_updates: str = "product-updates"
    llm_votes: str = "llm-votes"
    product_attributes: str = "product-attributes"
    attribute_review: str = "attribute-review"
    attribute_feedback: str = "attribute-feedback"
    ds_stats: str = "ds-stats"
    ds_model: str = "ds-model"
    student_model: str = "student-model"
    dead_letter: str = "dead-letter"
    partitions: int = Field(8, ge=1, description="partitions of product-keyed topics (the scale-out unit)")
    model_partitions: int = Field(4, ge=1, description="partitions of attribute-keyed topics (ds-stats, ds-model, "
                                  "student-model)")
    replication: int = Field(1, ge=1, description="replicas of every topic the worker creates (3 on a cluster)")
    min_insync_replicas: int | None = Field(
        None, ge=1, description="replicas that must have a write before it is acknowledged (acks=all); "
        "default: 2 when replication >= 3, else 1")

    def min_isr(self) -> int:
        """``min.insync.replicas`` for the topics and changelogs the worker creates."""
        if self.min_insync_replicas is not None:
            return min(self.min_insync_replicas, self.replication)
        return 2 if self.replication >= 3 else 1


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    embedded: bool = False
    """Local single-broker profile (tests, demo, drills): fast group joins and commits; never in production."""
    tansu: bool = False
    """Tansu workarounds (changelog end offsets from a fetch, short request timeout); Tansu only."""
    commit_guard: bool = True
    """Hold faust's commit at the first unfinished offset (faust #606); false only for the guard-off drill."""
    topic_prefix: str = "llmens."
    app_id: str = "llmens"
    """Consumer group of the workers; also the faust app id (table changelogs are named after it)."""

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class AggregationSettings(BaseModel):
    kappa: float | None = None
    t0: float | None = None
    eta_min: float | None = None
    review_below: float = Field(0.7, ge=0, le=1, description="decisions below this confidence also go to review")
    stats_flush_items: int = 256
    stats_flush_seconds: float = 1.0
    revision_window: int = Field(2000, ge=0, description="recent decisions per attribute re-scored on new models")
    revise_seconds: float = Field(5.0, gt=0, description="how often recent decisions are re-scored; a flipped one "
                                  "is re-emitted within this time (re-scoring 2,000 decisions costs ~20 ms per attribute)")

    def model_kwargs(self) -> dict[str, Any]:
        keys = ("kappa", "t0", "eta_min")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class StateSettings(BaseModel):
    """RocksDB memory per open database: each products-table partition (active and standby) and the response
    cache. faust's defaults (64 MiB write buffers, up to 3, and a 2 GiB block cache per partition) let a worker's
    memory grow with every product it stores until a buffer fills (with the revision window, the 14-16 % more RSS
    per 10,000 products of a 10,000-product soak). Bounded here; RocksDB flushes a full buffer to disk."""

    write_buffer_mib: int = Field(4, ge=1, description="memtable size per database before it is flushed")
    max_write_buffers: int = Field(2, ge=2, description="memtables per database (one filling, one flushing)")
    block_cache_mib: int = Field(8, ge=1, description="read cache per database")

    def rocksdb_options(self) -> dict[str, int]:
        """faust's RocksDB table options (``app.Table(options=...)``)."""
        return {"write_buffer_size": self.write_buffer_mib << 20, "max_write_buffer_number": self.max_write_buffers,
                "block_cache_size": self.block_cache_mib << 20}


class AdaptiveSettings(BaseModel):
    """Ask LLMs in stages until asking the rest could not pay off (off by default); see llmens_core.adaptive."""

    enabled: bool = False
    rule: Literal["gain", "confidence"] = Field(
        "gain", description="gain: stop when the unasked LLMs' expected accuracy gain <= max_gain, most "
        "informative LLM per call first; confidence: cheapest first until the posterior >= confidence_target")
    max_gain: float = Field(0.03, ge=0, lt=1)
    confidence_target: float = Field(0.95, gt=0, lt=1)
    exploration_share: float = Field(0.05, ge=0, le=1, description="products that ask every LLM at once")
    first_stage: int = Field(2, ge=1)
    warmup_items: int = Field(32, ge=0, description="every product asks every LLM until an attribute has this "
                              "many items with every LLM's vote")


class StudentSettings(BaseModel):
    """A text classifier per attribute asked before the LLMs (issue 33); see llmens_core.student, docs/adaptive.md.

    It only ever changes what is asked when adaptive querying is on: with full fan-out every LLM answers anyway.
    """

    enabled: bool | None = Field(
        None, description="ask the student first; default (unset): on when adaptive querying is on, since the "
        "student only decides alone where its measured agreement with the panel licenses it")
    exploration_share: float = Field(0.1, ge=0, le=1, description="products on which the student votes but the "
                                     "LLMs are asked whatever it says, so every member stays measured")
    target: float | None = Field(None, gt=0, le=1, description="agreement with the panel (one-sided 95 % Wilson "
                                 "lower bound) before the student votes; default 1 - adaptive.max_gain")
    window: int = Field(400, ge=1, description="latest prequential records per text bucket that count")
    min_scored: int = Field(30, ge=1, description="records above a threshold before it may be licensed")
    n_features: int = Field(2**16, ge=16, description="hash width of the word and of the character features")
    publish_seconds: float = Field(2.0, ge=0, description="a learner publishes each attribute's student at most "
                                   "this often (serialising one takes tens of ms)")

    def active(self, adaptive: AdaptiveSettings) -> bool:
        """True when workers ask the student first: it is enabled (or unset) and adaptive querying is on with the
        gain rule (the stopping rule that reads the student's vote through the DS model)."""
        return adaptive.enabled and adaptive.rule == "gain" and self.enabled is not False

    def licence_target(self, adaptive: AdaptiveSettings) -> float:
        return self.target if self.target is not None else 1.0 - adaptive.max_gain


class Settings(BaseSettings):
    """Everything a worker or a CLI command needs."""

    model_config = SettingsConfigDict(env_prefix="LLMENS_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicNames = TopicNames()
    aggregation: AggregationSettings = AggregationSettings()
    adaptive: AdaptiveSettings = AdaptiveSettings()
    student: StudentSettings = StudentSettings()
    state: StateSettings = StateSettings()
    llms: list[EndpointConfig] = Field(default_factory=list)
    attributes_file: Path | None = None
    data_dir: Path = Path("var/llmens")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    concurrency: int = Field(256, ge=1, description="products in flight per worker")
    product_deadline_s: float = 30.0
    max_event_bytes: int = 1_048_576
    all_failed_retries: int = 3
    all_failed_backoff_s: float = 2.0
    log_level: str = "info"
    lag_refresh_seconds: float = Field(
        15.0, gt=0, description="how old the consumer-lag sample behind /metrics may get before a scrape "
        "refreshes it (in the background; a scrape never waits on Kafka)")
    config_reload_seconds: float = Field(
        5.0, ge=0, description="how often a worker checks its config file for a changed `llms` list (0: never)")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    def topic(self, name: str) -> str:
        """Full topic name for a field of :class:`TopicNames`, e.g. ``topic('product_updates')``."""
        return self.kafka.topic(getattr(self.topics, name))


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - whole-file source
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("LLMENS_CONFIG")
        return read_config_file(Path(path)) if path else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML settings file into a dict; :class:`SettingsFileError` when missing or unparsable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise SettingsFileError(f"{path}: settings file not found") from None
    except OSError as exc:
        raise SettingsFileError(f"{path}: cannot read the settings file: {exc.strerror or exc}") from None
    return parse_config_bytes(text, path)


def parse_config_bytes(text: bytes, path: Path) -> dict[str, Any]:
    """Parse the bytes of settings file ``path`` (TOML by its suffix, else YAML) into a dict."""
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text.decode())
        data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise parse_error(path, exc, text) from None
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}:1: the settings file must hold a mapping (key: value lines), "
                                f"not a {type(data).__name__}")
    return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (or ``LLMENS_CONFIG``), the environment, then explicit overrides.

    Raises :class:`SettingsFileError` (one line per problem, naming file, line and field) for a settings file
    that is missing, does not parse or does not validate."""
    if config is not None:
        os.environ["LLMENS_CONFIG"] = str(config)
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        path = Path(os.environ["LLMENS_CONFIG"]) if os.environ.get("LLMENS_CONFIG") else None
        text = path.read_text(errors="replace") if path is not None and path.is_file() else ""
        raise validation_error(path, text, exc.errors()) from None
