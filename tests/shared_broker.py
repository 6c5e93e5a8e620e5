"""One broker for every pytest-xdist process of a run: the first process that asks starts it, the others attach to
it, and the one that started it stops it once every process has let it go (``make test`` runs the broker's tests on
two processes; they share the broker as one session would)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AttachedBroker", "shared_broker"]


@dataclass
class AttachedBroker:
    """The broker another process started: what tests read of a broker (its address, kind, jars and log)."""

    bootstrap: str
    port: int
    name: str
    lib: str | None
    log: str | None

    def tail_log(self, n: int = 40) -> str:
        log = Path(self.log) if self.log else None
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log and log.exists() else ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _describe(b: Any) -> dict:
    log = getattr(b, "log_path", None) or (Path(b.log_dir) / "broker.log" if getattr(b, "log_dir", None) else None)
    return {"bootstrap": b.bootstrap, "port": b.port, "name": b.name,
            "lib": str(b.lib) if getattr(b, "lib", None) else None, "log": str(log) if log else None, "users": 1}


@contextlib.contextmanager
def shared_broker(root: Path, start: Callable[[Path], Any], stop_wait_s: float = 900.0) -> Iterator[Any]:
    """The run's broker: started by ``start(log_dir)`` in the first process that asks (under ``root``, a folder every
    process of the run sees), else attached to. The starter waits, at its end, for the others to let it go."""
    lock, info = root / "broker.lock", root / "broker.json"
    with _locked(lock):
        data = json.loads(info.read_text()) if info.exists() else None
        if data is None:
            (root / "broker").mkdir(exist_ok=True)
            owned = start(root / "broker")
            data, broker = _describe(owned), owned
        else:
            owned, data["users"] = None, data["users"] + 1
            broker = AttachedBroker(**{k: v for k, v in data.items() if k != "users"})
        info.write_text(json.dumps(data))
    try:
        yield broker
    finally:
        with _locked(lock):
            data = json.loads(info.read_text())
            data["users"] -= 1
            info.write_text(json.dumps(data))
        if owned is not None:
            deadline = time.monotonic() + stop_wait_s
            while time.monotonic() < deadline:
                with _locked(lock):
                    if json.loads(info.read_text())["users"] <= 0:
                        info.unlink()  # a process that asks later starts its own
                        break
                time.sleep(0.5)
            owned.stop()
