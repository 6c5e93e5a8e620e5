"""Turn an LLM's answer text into one label (or abstention) per requested attribute.

Forgiving in form: code fences, prose around the JSON, case, whitespace, synonyms (via
:meth:`Attribute.to_label`), ``"n/a"``/``"None"``/``null`` = :data:`NOT_PRESENT`, a JSON object
``{attribute: value}`` or an ECInstruct-style list ``[{"attribute", "value", "source"}]``, optionally
wrapped in one outer object. Strict in content: a value outside the attribute's label set is an
abstention (label ``None``), never a label; keys that are not requested attributes are ignored.
Never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmens_core.events import NOT_PRESENT
from llmens_core.schema import NOT_PRESENT_WORDS, Attribute, normalise_text

__all__ = ["ParsedAnswer", "extract_json", "parse_answer", "parse_answer_shared"]

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)```", re.S)
_DECODER = json.JSONDecoder()
_MAX_SCAN = 64          # candidate start positions tried in prose
_MAX_TEXT = 200_000     # longer answers are cut (an LLM answer of this size is garbage anyway)
_RAW_LEN = 200


@dataclass
class ParsedAnswer:
    labels: dict[str, str | None]
    """Every requested attribute -> label, ``"none"``, or ``None`` (abstention)."""
    raw: dict[str, str | None] = field(default_factory=dict)
    """The raw value the model gave per attribute (cut to 200 chars), ``None`` when it gave none."""
    abstentions: int = 0
    """Answers that were present but outside the label set."""
    missing: int = 0
    """Requested attributes the answer did not mention."""
    found_json: bool = False


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except Exception:
        return _NOTHING


_NOTHING = object()


def _candidates(text: str):
    whole = _loads(text)
    if whole is not _NOTHING:
        yield whole
    for m in _FENCE.finditer(text):
        v = _loads(m.group(1).strip())
        if v is not _NOTHING:
            yield v
    tries = 0
    for m in re.finditer(r"[\[{]", text):
        tries += 1
        if tries > _MAX_SCAN:
            break
        try:
            v, _ = _DECODER.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(v, (dict, list)):
            yield v


_NORM: dict[str, str] = {}
_NORM_MAX_LEN = 80       # answer keys/values are a small vocabulary; long strings are not memoised
_NORM_MAX_SIZE = 50_000


def _norm(s: str) -> str:
    """:func:`normalise_text`, memoised for short strings."""
    r = _NORM.get(s)
    if r is None:
        r = normalise_text(s)
        if len(s) <= _NORM_MAX_LEN:
            if len(_NORM) >= _NORM_MAX_SIZE:
                _NORM.clear()
            _NORM[s] = r
    return r


def _norm_key(k: object) -> str:
    return _norm(k) if isinstance(k, str) else ""


def _to_label(attr: Attribute, value: object) -> str | None:
    """:meth:`Attribute.to_label` with the normalisation memoised."""
    if isinstance(value, str):
        key = _norm(value)
        return NOT_PRESENT if key in NOT_PRESENT_WORDS else attr.lookup.get(key)
    return attr.to_label(value)


@dataclass(frozen=True)
class _Plan:
    """What parsing needs about one attribute list, computed once per list."""

    attributes: tuple[Attribute, ...]
    names: tuple[str, ...]
    wanted: dict[str, str]
    by_name: dict[str, Attribute]
    classes: dict[str, frozenset[str]]
    exact_keys: frozenset[str]
    """Names that are their own normalised form: a JSON object with only these keys needs no key search."""


_PLANS: dict[tuple[int, ...], _Plan] = {}


def _plan(attributes: Sequence[Attribute]) -> _Plan:
    # keyed by identity (Attribute holds a dict, so it is unhashable); the plan keeps the attributes
    # alive, so an id in a key cannot be reused by another object while the entry exists
    key = tuple(map(id, attributes))
    plan = _PLANS.get(key)
    if plan is None:
        attrs = tuple(attributes)
        wanted = {normalise_text(a.name): a.name for a in attrs}
        plan = _Plan(attrs, tuple(a.name for a in attrs), wanted, {a.name: a for a in attrs},
                     {a.name: frozenset(a.classes) for a in attrs},
                     frozenset(k for k, name in wanted.items() if k == name))
        if len(_PLANS) >= 1024:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _pairs(obj: Any, wanted: dict[str, str], depth: int = 0) -> list[tuple[str, Any]]:
    """(attribute name, raw value) pairs found in a decoded JSON value."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = wanted.get(_norm_key(k))
            if name is not None:
                out.append((name, v))
        if not out and depth < 2:
            # one wrapper level, e.g. {"attributes": {...}} or {"output": [...]}
            for v in obj.values():
                if isinstance(v, (dict, list)):
                    out.extend(_pairs(v, wanted, depth + 1))
        # a single {"attribute": ..., "value": ...} object
        if not out and "attribute" in obj and "value" in obj:
            name = wanted.get(_norm_key(obj.get("attribute")))
            if name is not None:
                out.append((name, obj.get("value")))
    elif isinstance(obj, list) and depth < 3:
        for item in obj:
            if isinstance(item, dict) and ("attribute" in item or "Attribute" in item):
                name = wanted.get(_norm_key(item.get("attribute", item.get("Attribute"))))
                if name is not None:
                    out.append((name, item.get("value", item.get("Value"))))
            elif isinstance(item, dict):
                out.extend(_pairs(item, wanted, depth + 1))
    return out


def extract_json(text: str) -> Any | None:
    """The first JSON object/list in ``text`` (whole text, code fences, then prose), or ``None``."""
    if not isinstance(text, str):
        return None
    for v in _candidates(text[:_MAX_TEXT]):
        if isinstance(v, (dict, list)):
            return v
    return None


def _value_to_label(attr: Attribute, value: Any) -> str | None:
    if isinstance(value, dict):  # {"value": "x", "source": ...}
        value = value.get("value", value.get("label", _NOTHING))
        if value is _NOTHING:
            return None
    if isinstance(value, list):  # ["red"] is fine; two different labels is not one answer
        if not value:
            return NOT_PRESENT
        labels = {_to_label(attr, v) if isinstance(v, str) or v is None else None for v in value}
        return labels.pop() if len(labels) == 1 else None
    try:
        return _to_label(attr, value)
    except Exception:
        return None


def _raw(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:_RAW_LEN]
    try:
        return orjson.dumps(value).decode()[:_RAW_LEN]
    except Exception:
        return repr(value)[:_RAW_LEN]


def parse_answer(text: Any, attributes: Sequence[Attribute], *, missing_is_none: bool = False) -> ParsedAnswer:
    """Parse ``text`` into one label per attribute.

    ``missing_is_none``: an attribute the answer does not mention means "not present" (the ECInstruct
    convention); otherwise it is an abstention.
    """
    plan = _plan(attributes)
    wanted, by_name = plan.wanted, plan.by_name
    result = ParsedAnswer(labels=dict.fromkeys(plan.names), raw=dict.fromkeys(plan.names))
    seen: set[str] = set()
    try:
        if isinstance(text, str):
            best: list[tuple[str, Any]] = []
            # fast path, same result as the search below: the whole text is one JSON object whose keys
            # are all exactly requested attribute names (what a structured-output model sends)
            whole = _loads(text) if len(text) <= _MAX_TEXT else _NOTHING
            if type(whole) is dict and whole and plan.exact_keys.issuperset(whole):
                result.found_json = True
                best = list(whole.items())
            else:
                for cand in _candidates(text[:_MAX_TEXT]):
                    result.found_json = True
                    pairs = _pairs(cand, wanted)
                    if pairs:
                        best = pairs
                        break
            for name, value in best:
                if name in seen:
                    continue  # first answer for an attribute wins
                seen.add(name)
                label = _value_to_label(by_name[name], value)
                result.labels[name] = label
                result.raw[name] = _raw(value) if value is not None else "null"
                if label is None:
                    result.abstentions += 1
    except Exception:  # pragma: no cover - belt and braces: parsing never raises
        pass
    for name in by_name:
        if name not in seen:
            result.missing += 1
            if missing_is_none and result.found_json:
                result.labels[name] = NOT_PRESENT
    # invariant: every label is one of the attribute's classes or None
    classes = plan.classes
    for name, label in result.labels.items():
        if label is not None and label not in classes[name]:  # pragma: no cover
            result.labels[name] = None
    return result


_ANSWERS: dict[tuple[str, tuple[int, ...], bool], tuple[_Plan, ParsedAnswer]] = {}
_ANSWER_MAX_LEN = 1024
_ANSWERS_MAX = 20_000


def parse_answer_shared(text: str, attributes: Sequence[Attribute], *, missing_is_none: bool = False
                        ) -> ParsedAnswer:
    """:func:`parse_answer` memoised on (text, attributes, flag) for short texts.

    Structured-output answers repeat a lot (a few labels per attribute), so most answers are parsed
    once. The result may be shared between callers: treat it as read-only.
    """
    if not isinstance(text, str) or len(text) > _ANSWER_MAX_LEN:
        return parse_answer(text, attributes, missing_is_none=missing_is_none)
    ids = tuple(map(id, attributes))
    key = (text, ids, missing_is_none)
    hit = _ANSWERS.get(key)
    if hit is not None:
        return hit[1]
    plan = _plan(attributes)  # kept in the entry so the ids in the key stay those of live attributes
    parsed = parse_answer(text, attributes, missing_is_none=missing_is_none)
    if len(_ANSWERS) >= _ANSWERS_MAX:
        _ANSWERS.clear()
    _ANSWERS[key] = (plan, parsed)
    return parsed
