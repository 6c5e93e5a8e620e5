"""Hot reconfiguration of the LLMs of a running worker: edit the config file, no restart.

A worker timer checks the settings file named by ``LLMENS_CONFIG`` (the file :class:`~streams.settings.Settings`
loaded) every ``config_reload_seconds``. The check is a ``stat`` (mtime, size, inode) run off the event loop;
only when that changes is the file read and parsed (also off the loop). When its ``llms`` list differs
from the running one, the new list is applied to

* the gateway (``Gateway.set_endpoints``): an added LLM is asked from the next product on, a removed one is
  no longer asked (calls in flight finish), an unchanged one keeps its client, breaker and limits;
* the model registry: an added LLM joins every attribute's model at the prior (equal to the others: a
  majority-vote voice) and earns its weight from the statistics of its votes; a removed LLM's estimate stays in
  the model, frozen, and no longer matters because it no longer votes;
* the adaptive policy, when adaptive querying is on.

A file that does not parse, an ``llms`` entry that fails validation, duplicate names, a ``fallback`` naming
no endpoint or no enabled LLM at all: the error is logged, the running LLMs are kept, and the reload is
counted as ``invalid`` (``/counters`` ``config_reload_errors``, ``llmens_config_reloads_total{outcome}``).
Only ``llms`` is hot: other settings still need a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from pydantic import TypeAdapter

from llmens_core.llm.config import EndpointConfig
from streams.settings import Settings, parse_config_bytes

log = logging.getLogger("llmens.reconfig")

__all__ = ["LlmReloader", "install_reconfig", "load_llms", "validate_llms"]

_ENDPOINTS = TypeAdapter(list[EndpointConfig])


def validate_llms(llms: Sequence[EndpointConfig]) -> None:
    """Raise ``ValueError`` when ``llms`` cannot run: no enabled LLM, duplicate names, unknown fallbacks."""
    names = [e.name for e in llms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"llms: duplicate endpoint names {dup}")
    if not any(e.enabled for e in llms):
        raise ValueError("llms: no enabled LLM")
    bad = sorted(f"{e.name} -> {e.fallback}" for e in llms if e.fallback and e.fallback not in names)
    if bad:
        raise ValueError(f"llms: fallback to an unknown endpoint: {bad}")


def load_llms(path: Path) -> list[EndpointConfig]:
    """The validated ``llms`` list of settings file ``path`` (blocking: run it in a thread)."""
    data = parse_config_bytes(path.read_bytes(), path)
    if "llms" not in data:
        raise ValueError(f"{path}: no `llms` list")
    llms = _ENDPOINTS.validate_python(data["llms"])
    validate_llms(llms)
    return llms


def _signature(path: Path) -> tuple:
    try:
        s = os.stat(path)
    except FileNotFoundError:
        return ("missing",)
    return (s.st_mtime_ns, s.st_size, s.st_ino)


class LlmReloader:
    """Apply a changed ``llms`` list of ``path`` to a running :class:`streams.app.Worker` (see the module doc)."""

    def __init__(self, path: Path, worker: Any, policy: Any = None):
        self.path = Path(path)
        self.w = worker
        self.policy = policy
        self._seen: tuple | None = None

    async def check(self) -> str | None:
        """One check: ``None`` when the file did not change, else the outcome (applied, unchanged, invalid)."""
        sig = await asyncio.to_thread(_signature, self.path)
        if sig == self._seen:
            return None
        self._seen = sig
        try:
            llms = await asyncio.to_thread(load_llms, self.path)
        except Exception as exc:  # noqa: BLE001 - a bad edit must never stop the worker
            return self._count("invalid", f"config {self.path} not applied, keeping the running LLMs: {exc}")
        return self.apply(llms)

    def apply(self, llms: Sequence[EndpointConfig]) -> str:
        """Switch the worker to ``llms`` (validated); returns the outcome."""
        w = self.w
        old = list(w.settings.llms)
        before = {e.name: e for e in old}
        after = {e.name: e for e in llms}
        if [e.model_dump() for e in old] == [e.model_dump() for e in llms]:
            return self._count("unchanged")
        try:
            validate_llms(llms)
            self._switch(list(llms))
        except Exception as exc:  # noqa: BLE001 - restore the running set, whatever failed half-way
            self._switch(old)
            return self._count("invalid", f"config {self.path} not applied, keeping the running LLMs: {exc}")
        added = [n for n in after if n not in before]
        removed = [n for n in before if n not in after]
        changed = [n for n in after if n in before and after[n] != before[n]]
        log.warning("LLMs reconfigured from %s: added %s, removed %s, changed %s; now asking %s", self.path,
                    added, removed, changed, [e.name for e in llms if e.enabled])
        w.counters["llms_added"] += len(added)
        w.counters["llms_removed"] += len(removed)
        return self._count("applied")

    def _switch(self, llms: list[EndpointConfig]) -> None:
        w = self.w
        w.registry.set_endpoints(llms)
        if w.gateway is not None:
            w.gateway.set_endpoints(llms)
        if self.policy is not None:
            self.policy.set_endpoints(llms)
        w.settings.llms = llms  # a gateway started later is built from these

    def _count(self, outcome: str, error: str | None = None) -> str:
        key = {"applied": "config_reloads", "invalid": "config_reload_errors"}.get(outcome, "config_unchanged")
        self.w.counters[key] += 1
        self.w.metrics.config_reloads.labels(outcome).inc()
        if error is not None:
            log.error("%s", error)
        return outcome


def install_reconfig(app: faust.App, w: Any, settings: Settings, policy: Any = None) -> LlmReloader | None:
    """Register the config-file check on ``app`` (every ``settings.config_reload_seconds``).

    ``w`` is the :class:`streams.app.Worker`, ``policy`` the adaptive policy when adaptive querying is on.
    Returns the reloader, or ``None`` when there is no file to watch (no ``LLMENS_CONFIG``), the interval is 0,
    or ``LLMENS_LLMS`` in the environment overrides the file's list.
    """
    path = os.environ.get("LLMENS_CONFIG")
    if not path or settings.config_reload_seconds <= 0:
        log.info("LLM hot reconfiguration off (no LLMENS_CONFIG, or config_reload_seconds = 0)")
        return None
    if "LLMENS_LLMS" in os.environ:
        log.warning("LLM hot reconfiguration off: LLMENS_LLMS in the environment overrides the file's `llms`")
        return None
    reloader = LlmReloader(Path(path), w, policy)

    @app.timer(interval=settings.config_reload_seconds)
    async def reload_llms() -> None:
        await reloader.check()

    return reloader
