"""The providers' official SDKs as the oracle of what their APIs accept, and a recording server on loopback.

``request_errors(body, TypedDictOfTheSdk)`` checks a request body against the SDK's own request TypedDict
the way its API does: every key must be one the SDK declares (unknown keys are errors), required keys must be
there, literals must be among the SDK's values, recursively (pydantic validates ``Iterable[...]`` fields of a
TypedDict lazily, so it cannot see into ``messages``; this walk does).
"""

from __future__ import annotations

import collections.abc as cabc
import types
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

import orjson
from aiohttp import web
from typing_extensions import get_type_hints, is_typeddict

_SEQUENCES = (list, cabc.Iterable, cabc.Sequence, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping)


def request_errors(value: Any, tp: Any, path: str = "body") -> list[str]:
    """Where ``value`` does not fit the type ``tp`` (an SDK request TypedDict); [] when it fits."""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return []
    if origin in (Required, NotRequired) or (origin is not None and getattr(origin, "__name__", "") == "Annotated"):
        return request_errors(value, get_args(tp)[0], path)
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        hints = get_type_hints(tp)
        errors = [f"{path}.{k}: unknown key" for k in value if k not in hints]
        errors += [f"{path}.{k}: required key missing" for k in getattr(tp, "__required_keys__", ()) if k not in value]
        for k, v in value.items():
            if k in hints:
                errors += request_errors(v, hints[k], f"{path}.{k}")
        return errors
    if origin in (Union, types.UnionType):
        best: list[str] | None = None
        for option in get_args(tp):
            errs = request_errors(value, option, path)
            if not errs:
                return []
            if best is None or len(errs) < len(best):
                best = errs
        return best or [f"{path}: fits no option"]
    if origin is Literal:
        return [] if value in get_args(tp) else [f"{path}: {value!r} not one of {get_args(tp)}"]
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        vt = get_args(tp)[1] if len(get_args(tp)) == 2 else Any
        return [e for k, v in value.items() for e in request_errors(v, vt, f"{path}.{k}")]
    if origin in _SEQUENCES or getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        et = get_args(tp)[0] if get_args(tp) else Any
        return [e for i, v in enumerate(value) for e in request_errors(v, et, f"{path}[{i}]")]
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if tp is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    return []  # a construct this walk does not know: the pydantic check covers it


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """The JSON body, or a function of the request's JSON body returning it."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recording:
    """What the server received (path, headers, JSON body) and the replies it gives, in order (the last repeats)."""

    base_url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)

    def reply(self, *replies: Reply) -> Recording:
        self.replies[:] = list(replies)
        self.requests.clear()
        return self

    @property
    def bodies(self) -> list[Any]:
        return [b for _, _, b in self.requests]


async def start_recorder() -> tuple[web.AppRunner, Recording]:
    """An aiohttp server on 127.0.0.1 answering any POST with the scripted replies."""
    rec = Recording("")

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        rec.requests.append((request.path, dict(request.headers), orjson.loads(raw) if raw else None))
        r = rec.replies[min(len(rec.requests), len(rec.replies)) - 1] if rec.replies else Reply(500, {"error": "none"})
        body = r.body(rec.requests[-1][2]) if callable(r.body) else r.body
        return web.Response(status=r.status, body=orjson.dumps(body), headers=r.headers,
                            content_type="application/json")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    return runner, rec
