"""Event contracts between producers, llmens workers and downstream readers.

Every event is a JSON object (encoded with orjson). Decoding validates and names the bad field, so a
malformed event can be dead-lettered with a reason a person can act on. Field names are the wire format:
change them only with a new contract version.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "NOT_PRESENT",
    "AttributeDecision",
    "AttributeFeedback",
    "DeadLetter",
    "EventError",
    "LabelVote",
    "ProductUpdate",
    "decode",
    "encode",
]

NOT_PRESENT = "none"
"""The label meaning "the product text does not state this attribute" (gold ``null``, model "n/a")."""


class EventError(ValueError):
    """An event could not be decoded or validated; ``str(err)`` names the field and the problem."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=False))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None):
        """Decode and validate one event; raise :class:`EventError` that names what is wrong."""
        return decode(cls, data, max_bytes=max_bytes)


class ProductUpdate(_Event):
    """A product was created or changed. ``version`` increases with every change of one product."""

    model_config = ConfigDict(frozen=True, extra="allow")

    product_id: str = Field(min_length=1, max_length=512)
    version: int = Field(ge=0)
    title: str = Field(min_length=1)
    description: str | None = None
    category: str | None = None
    attributes: list[str] | None = None
    """Attributes to label; ``None`` means the category's defaults from the attribute schema."""
    updated_at: float | None = None
    """Unix seconds of the change at the source (informational)."""

    @field_validator("version", mode="before")
    @classmethod
    def _strict_int(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("must be an integer")
        return v

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes_list(cls, v: Any) -> Any:
        if isinstance(v, dict):  # tolerate the gold-carrying dev format {attr: label}
            return list(v)
        return v

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def content_text(self) -> str:
        """The text LLMs see; its hash keys the response cache."""
        return f"{self.title}\n{self.description or ''}\n{self.category or ''}"


class LabelVote(_Event):
    """One LLM's answer for one attribute of one product version; ``label=None`` is an abstention."""

    product_id: str
    version: int
    attribute: str
    llm: str
    label: str | None
    raw: str | None = None
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None
    """Why there is no label when the call failed (the LLM gave no usable answer)."""
    confidence: float | None = None
    """Probability the LLM gave this label's tokens (from the server's logprobs), when it returned them."""


class AttributeDecision(_Event):
    """The ensemble's decision for (product_id, version, attribute); the idempotency key of the output."""

    product_id: str
    version: int
    attribute: str
    value: str | None
    """The decided label, ``"none"`` when the attribute is not present, ``None`` when nobody answered."""
    confidence: float
    posterior: dict[str, float]
    votes: dict[str, str | None]
    model_version: int
    decided_at: float = Field(default_factory=time.time)
    revision: int = 0
    reason: Literal["complete", "deadline", "adaptive", "revision", "failed"] = "complete"
    asked: list[str] = Field(default_factory=list)
    stopped: Literal["warmup", "explore", "confident", "exhausted", "student"] | None = None
    """Adaptive querying: why no further LLM was asked (every LLM was asked when ``None``); ``"student"``: the
    student's votes settled the product and no LLM was asked."""
    llm_seconds: float = 0.0
    """Wall time this product spent waiting on LLMs."""
    processing_seconds: float = 0.0
    """Wall time from the worker taking the event to this decision; minus ``llm_seconds`` = our overhead."""

    @property
    def key(self) -> str:
        return f"{self.product_id}/{self.attribute}"


class AttributeFeedback(_Event):
    """A human-verified (gold) label for one attribute of a product, read from ``attribute-feedback``.

    The worker that owns the product folds it into the learner (the item's posterior clamped to ``label``)
    and scores its own decision and every LLM's vote against it. ``version`` names the product version the
    label was checked on; ``None`` means the latest decided version. Extra fields (a reviewer's comment) are
    kept, as for :class:`ProductUpdate`.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    product_id: str = Field(min_length=1, max_length=512)
    version: int | None = Field(None, ge=0)
    attribute: str = Field(min_length=1)
    label: str = Field(min_length=1)
    """A class of the attribute (its label set or ``"none"``: not stated in the text); synonyms are accepted."""
    source: str | None = None
    """Who or what verified it (a reviewer id, an audit batch), kept for the audit trail."""
    decided_at: float = Field(default_factory=time.time)
    """Unix seconds of the human verification."""

    @field_validator("version", mode="before")
    @classmethod
    def _strict_int(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError("must be an integer or null")
        return v


class DeadLetter(_Event):
    """An input that could not be processed, kept whole with the reason and where it came from."""

    source_topic: str
    partition: int
    offset: int
    error: str
    original_b64: str
    key_b64: str | None = None
    failed_at: float = Field(default_factory=time.time)
    original_size: int = 0
    """Bytes of the original value; more than ``original`` holds when ``truncated``."""
    truncated: bool = False

    @classmethod
    def wrap(
        cls, original: bytes | None, error: str, *, topic: str, partition: int, offset: int,
        key: bytes | None = None, keep_bytes: int | None = None,
    ) -> DeadLetter:
        """A dead letter for ``original``; beyond ``keep_bytes`` only its head is kept (the offset finds the rest).

        A dead letter must fit the broker's message limit or it is lost with the event it describes.
        """
        original = original or b""
        truncated = keep_bytes is not None and len(original) > keep_bytes
        kept = original[:keep_bytes] if truncated else original
        return cls(
            source_topic=topic, partition=partition, offset=offset, error=error,
            original_b64=base64.b64encode(kept).decode(), original_size=len(original), truncated=truncated,
            key_b64=base64.b64encode(key[:1024]).decode() if key is not None else None,
        )

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)


def encode(event: BaseModel) -> bytes:
    """Serialise any contract event to JSON bytes."""
    return orjson.dumps(event.model_dump(mode="json"))


def decode(cls: type[_Event], data: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None):
    """Decode ``data`` into ``cls``; every failure is an :class:`EventError` naming the field."""
    if isinstance(data, str):
        data = data.encode()
    if data is None:
        raise EventError("empty message: no value")
    if max_bytes is not None and len(data) > max_bytes:
        raise EventError(f"event too large: {len(data)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError(f"event must be a JSON object, got {type(obj).__name__}")
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False)[:5]:
            loc = ".".join(str(x) for x in err["loc"]) or "<event>"
            parts.append(f"{loc}: {err['msg']}")
        raise EventError("; ".join(parts)) from None
