"""A single-node Apache Kafka KRaft broker (broker + controller) from the jars pinned in deploy/kafka/pom.xml.

Why: users run llmens on Apache Kafka, so tests, drills and benchmarks must too. The jars come once from
Maven (``mvn dependency:copy-dependencies``) into ``~/.cache/llmens/kafka-<version>/lib``; the broker is
formatted on a log directory, started on free loopback ports with a small heap, stopped by its own pid
and can be restarted on the same log directory (to prove nothing is lost across a broker restart).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from streams.harness.brokers import BrokerError
from streams.harness.processes import free_port, stop_process_group

POM = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"

# Settings that make a one-node broker quick to test on: no rebalance delay, replication 1 for the
# internal topics, small segments so compaction and retention work on small data.
FAST_TEST_CONFIG = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "num.partitions": "1",
    "group.min.session.timeout.ms": "1000",  # the local profile's 2 s session timeout (faust, learner)
    "auto.create.topics.enable": "true",
    "log.segment.bytes": str(8 * 1024 * 1024),
    "log.cleaner.dedupe.buffer.size": str(2 * 1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "2",
}


def java_major_version() -> int | None:
    """The major version of ``java`` on PATH, or None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def pinned_version(pom: Path = POM) -> str:
    """The Kafka version pinned in the pom's ``kafka.version`` property."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
    if not match:
        raise BrokerError(f"no <kafka.version> in {pom}")
    return match.group(1)


def kafka_lib(version: str | None = None) -> Path:
    """The directory with the pinned Kafka's jars, fetched once with Maven when missing."""
    version = version or pinned_version()
    lib = Path.home() / ".cache" / "llmens" / f"kafka-{version}" / "lib"
    if not any(lib.glob("kafka_2.13-*.jar")):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars")
        subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
            check=True,
        )
    return lib


class KafkaBroker:
    """One Apache Kafka KRaft process on loopback; ``start()``, ``stop()``, ``kill()``, ``restart()``."""

    def __init__(self, log_dir: Path | None = None, heap: str = "256m", host: str = "127.0.0.1",
                 port: int = 0, *, node_id: int = 1, controller_port: int = 0, voters: str | None = None,
                 cluster_id: str | None = None, config: dict[str, str] | None = None) -> None:
        """``voters`` (``id@host:port,...``) and a shared ``cluster_id`` make this node one of a cluster
        (:class:`streams.harness.brokers.cluster.KafkaCluster`); without them it is a standalone node."""
        self.version = pinned_version()
        self.lib = kafka_lib(self.version)
        self.host = host
        self.heap = heap
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="llmens-kafka-"))
        self.port = port or free_port(host)
        self.controller_port = controller_port or free_port(host)
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.extra_config = dict(config or {})
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.log_dir / "server.properties"

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-Dlog4j2.level=WARN", "-cp", f"{self.lib}/*", main, *args]

    def _write_config(self) -> None:
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            **({"controller.quorum.voters": self.voters} if self.voters
               else {"controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}"}),
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir / "data"),
            **FAST_TEST_CONFIG,
            **self.extra_config,
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))

    def format(self) -> None:
        """Write the config and format the log directory as a standalone KRaft node (once per log dir)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if (self.log_dir / "data" / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
        standalone = [] if self.voters else ["--standalone"]
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_path),
                       *standalone),
            check=True, capture_output=True,
        )

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        """Start (formatting first if needed) and wait until the broker port answers."""
        self.launch()
        try:
            return self.wait_ready(timeout_s)
        except BaseException:  # a Ctrl-C or SIGTERM while starting must not leave the JVM behind
            self.stop()
            raise

    def launch(self) -> None:
        """Start the JVM (formatting first if needed) without waiting for it."""
        self.format()
        self._began = time.monotonic()
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.config_path)),
            stdout=open(self.log_dir / "broker.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90.0, coordinator: bool = True) -> KafkaBroker:
        """Wait until the broker port answers (and, with ``coordinator``, the offsets topic serves)."""
        began = self._began
        while time.monotonic() - began < timeout_s:
            if self.proc.poll() is not None:
                raise BrokerError(f"Kafka exited with {self.proc.returncode}; see {self.log_dir / 'broker.log'}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    if coordinator:
                        self._wait_group_coordinator(began + timeout_s)
                    self.startup_s = time.monotonic() - began
                    return self
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"Kafka did not answer on {self.bootstrap} within {timeout_s} s")

    def _wait_group_coordinator(self, deadline: float) -> None:
        """Wait until the offsets topic answers OffsetFetch.

        librdkafka 2.16 segfaults (``rd_kafka_cgrp_op`` from ``ListConsumerGroupOffsets``) on an admin
        client whose OffsetFetch meets a coordinator still loading ``__consumer_offsets``; a fresh broker
        is in that state for a moment, so the first lag sample of a worker could kill it.
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "llmens-broker-ready", "log_level": 0})
        try:
            while True:
                try:
                    probe.committed([TopicPartition("llmens-broker-ready", 0)], timeout=5)
                    return
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise BrokerError(f"Kafka on {self.bootstrap} never served OffsetFetch") from None
                    time.sleep(0.2)
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM our own process group (a clean shutdown), SIGKILL after a grace period."""
        if self.proc is not None:
            stop_process_group(self.proc, timeout_s=20.0)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for drills)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> KafkaBroker:
        """Start again on the same log directory and ports."""
        return self.start()

    name = "Apache Kafka"

    def tail_log(self, n: int = 40) -> str:
        """The last ``n`` lines of the broker's log, for failure reports."""
        log = self.log_dir / "broker.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
