"""Attribute schemas: which labels each attribute may take, their synonyms, and who asks for it.

The label set of an attribute is closed: anything an LLM says that does not map into it is an
abstention, never a label. Every attribute also has the label ``"none"`` ("not stated in the text").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import orjson

from llmens_core.events import NOT_PRESENT

__all__ = ["NOT_PRESENT_WORDS", "Attribute", "AttributeSchema", "normalise_text"]

NOT_PRESENT_WORDS = frozenset(
    {"none", "n/a", "na", "null", "not present", "not stated", "not mentioned", "unknown", "not applicable",
     "not available", "no value", "-", ""}
)
_SPACE = re.compile(r"[\s_]+")


def normalise_text(value: str) -> str:
    """Case- and whitespace-insensitive form used to match answers to labels ('Medium_Dark' == 'medium dark')."""
    return _SPACE.sub(" ", value.strip().strip("\"'`.").lower()).strip()


@dataclass(frozen=True)
class Attribute:
    """One attribute: its closed label set (plus ``none``), synonyms and default categories."""

    name: str
    labels: tuple[str, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    categories: frozenset[str] = frozenset()

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels a vote may take: the label set followed by ``none``."""
        return (*self.labels, NOT_PRESENT)

    @cached_property
    def lookup(self) -> dict[str, str]:
        """Normalised answer text -> label (synonyms first, exact labels win)."""
        table = {normalise_text(w): label for label, words in self.synonyms.items() for w in words}
        table.update({normalise_text(label): label for label in self.labels})
        return table

    def to_label(self, answer: object) -> str | None:
        """Map one raw answer to a class, or ``None`` (abstention) if it is outside the label set."""
        if answer is None:
            return NOT_PRESENT
        if not isinstance(answer, str):
            return None
        key = normalise_text(answer)
        if key in NOT_PRESENT_WORDS:
            return NOT_PRESENT
        return self.lookup.get(key)


@dataclass(frozen=True)
class AttributeSchema:
    """All attributes llmens may label, loaded from a JSON config (see ``llmens_core/data/attributes.json``)."""

    attributes: Mapping[str, Attribute]

    def __getitem__(self, name: str) -> Attribute:
        return self.attributes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.attributes

    def __iter__(self):
        return iter(self.attributes)

    def for_category(self, category: str | None) -> list[str]:
        """The attributes a product of ``category`` asks for when it names none itself."""
        if category is None:
            return []
        return [a.name for a in self.attributes.values() if category in a.categories]

    def requested(self, attributes: Iterable[str] | None, category: str | None) -> tuple[list[str], list[str]]:
        """Split a request into (known attributes, unknown names); ``None`` means the category defaults."""
        if attributes is None:
            return self.for_category(category), []
        known, unknown = [], []
        for name in attributes:
            (known if name in self.attributes else unknown).append(name)
        return list(dict.fromkeys(known)), unknown

    def subset(self, names: Iterable[str]) -> AttributeSchema:
        return AttributeSchema({n: self.attributes[n] for n in names})

    def fingerprint(self) -> bytes:
        """Stable bytes of every label set, part of the prompt version (label sets change the prompt)."""
        return orjson.dumps({n: list(a.classes) for n, a in sorted(self.attributes.items())})

    @classmethod
    def from_dict(cls, raw: Mapping) -> AttributeSchema:
        attrs = {}
        for name, spec in raw["attributes"].items():
            labels = tuple(spec["labels"])
            if not labels:
                raise ValueError(f"attribute {name!r}: empty label set")
            if NOT_PRESENT in labels:
                raise ValueError(f"attribute {name!r}: {NOT_PRESENT!r} is reserved for 'not present'")
            syn = {k: tuple(v) for k, v in (spec.get("synonyms") or {}).items()}
            bad = [k for k in syn if k not in labels]
            if bad:
                raise ValueError(f"attribute {name!r}: synonyms for unknown labels {bad}")
            attrs[name] = Attribute(name, labels, syn, frozenset(spec.get("categories") or ()))
        return cls(attrs)

    @classmethod
    def load(cls, path: str | Path | None = None) -> AttributeSchema:
        """Load a schema file, or the one shipped with llmens when ``path`` is ``None``."""
        if path is None:
            data = resources.files("llmens_core.data").joinpath("attributes.json").read_bytes()
        else:
            data = Path(path).read_bytes()
        return cls.from_dict(orjson.loads(data))
