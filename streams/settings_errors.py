"""One readable line for a bad settings file: the file, the line and the field, instead of a traceback.

Three ways a settings file goes wrong: it is missing, it does not parse (YAML/TOML syntax), or a value does
not validate (pydantic). Each becomes a :class:`SettingsFileError` whose message reads like a compiler's:
``deploy/llmens.yaml:12: kafka.bootstrap: Input should be a valid string``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml

__all__ = ["SettingsFileError", "field_line", "parse_error", "validation_error"]


class SettingsFileError(ValueError):
    """A settings file that is missing, does not parse or does not validate; ``str()`` is the whole message."""


def parse_error(path: Path, exc: Exception, text: bytes = b"") -> SettingsFileError:
    """The message for a YAML or TOML syntax error (or undecodable bytes), with the line the parser stopped at."""
    line = None
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    position = getattr(exc, "position", None)
    if position is None and isinstance(exc, UnicodeDecodeError):
        position = exc.start
    if mark is not None:
        line = mark.line + 1
    elif isinstance(position, int):
        line = text[:position].count(b"\n") + 1
    else:
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
    if isinstance(exc, yaml.reader.ReaderError):
        reason = f"{exc.reason} (character {exc.character!r})"
    elif isinstance(exc, UnicodeDecodeError):
        reason = f"not UTF-8 ({exc.reason})"
    else:
        reason = getattr(exc, "problem", None) or re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
    reason = " ".join(str(reason).split())
    where = f"{path}:{line}" if line else str(path)
    return SettingsFileError(f"{where}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {reason}")


def validation_error(path: Path | None, text: str, errors: Sequence[dict]) -> SettingsFileError:
    """The message for pydantic's validation errors: one line per bad field, the first line of each."""
    lines = []
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "__root__"]
        field = ".".join(str(p) for p in loc) or "(settings)"
        line = field_line(path, text, loc) if path is not None else None
        where = f"{path}:{line}" if line else (f"{path}" if path is not None else "settings")
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{where}: {field}: {err.get('msg', 'invalid')}{shown}")
    return SettingsFileError("\n".join(lines))


def field_line(path: Path, text: str, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the field at ``loc`` in the file's text (its nearest existing parent), or None."""
    if path.suffix == ".toml":
        return _toml_line(text, loc)
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        child = _yaml_child(node, part)
        if child is None:
            break
        key_line, node = child
        line = key_line
    return line


def _yaml_child(node, part) -> tuple[int, object] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == str(part):
                return key.start_mark.line + 1, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item.start_mark.line + 1, item
    return None


def _toml_line(text: str, loc: Sequence[str | int]) -> int | None:
    """Best effort for TOML: the ``key =`` line under the ``[table]`` the path names, else the table header."""
    names = [str(p) for p in loc if not isinstance(p, int)]
    if not names:
        return None
    table = names[:-1]
    current: list[str] = []
    header_line = None
    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", stripped)
        if header:
            current = [p.strip().strip('"') for p in header.group(1).split(".")]
            if current == names or (current == table and header_line is None and table):
                header_line = n
            continue
        match = re.match(r"^([A-Za-z0-9_.\"-]+)\s*=", stripped)
        if match:
            full = current + [p.strip('"') for p in match.group(1).split(".")]
            if full == names or full == names[: len(full)]:
                return n
    return header_line
