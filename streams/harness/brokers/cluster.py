"""A three-node Apache Kafka KRaft cluster on loopback, from the same jars as the single node.

Why combined nodes (each process is broker and controller, the three form the controller quorum): three
JVMs instead of six on a 2-core machine, and it is the layout small production clusters run. Killing the
active controller then also takes a broker away, which a drill wants anyway. Every port is a free one
chosen by the kernel (node 1 may be given one, for ``llmens broker --port``), so several clusters and the
test brokers of other sessions on the same machine never collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from streams.harness.brokers import BrokerError
from streams.harness.brokers.kafka import KafkaBroker
from streams.harness.processes import free_port

__all__ = ["CLUSTER_CONFIG", "KafkaCluster"]

# What makes the cluster production-shaped: internal and new topics replicated on all three nodes, writes
# acknowledged by two in-sync replicas, no unclean election. Quick failure detection for drills on loopback.
CLUSTER_CONFIG = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "unclean.leader.election.enable": "false",
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
}


class KafkaCluster:
    """Three (``nodes``) KRaft nodes; ``start()``, ``stop()``, ``kill(node_id)``, ``restart(node_id)``."""

    name = "Apache Kafka cluster"

    def __init__(self, log_dir: Path | None = None, nodes: int = 3, heap: str = "256m",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if nodes < 1:
            raise BrokerError("a cluster needs at least one node")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="llmens-kafka-cluster-"))
        self.host = host
        ids = range(1, nodes + 1)
        controller_ports = {i: free_port(host) for i in ids}
        voters = ",".join(f"{i}@{host}:{controller_ports[i]}" for i in ids)
        cluster_id = self._cluster_id()
        rf = str(min(3, nodes))
        config = {**CLUSTER_CONFIG, **{k: rf for k in CLUSTER_CONFIG if k.endswith("replication.factor")},
                  **{k: str(min(2, nodes)) for k in CLUSTER_CONFIG if k.endswith("min.isr") or k.startswith("min.")}}
        self.nodes = {
            i: KafkaBroker(self.log_dir / f"node-{i}", heap=heap, host=host, port=port if i == 1 else 0,
                           node_id=i, controller_port=controller_ports[i], voters=voters, cluster_id=cluster_id,
                           config=config)
            for i in ids
        }
        self.version = self.nodes[1].version

    def _cluster_id(self) -> str:
        """One id for every node, kept in the log dir so a restarted cluster formats nothing anew."""
        path = self.log_dir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex[:22]
        path.write_text(cluster_id)
        return cluster_id

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Start every node at once (a quorum needs a majority up) and wait until all serve clients."""
        try:
            for node in self.nodes.values():
                node.launch()
            for node in self.nodes.values():
                node.wait_ready(timeout_s, coordinator=False)
            self.nodes[1]._wait_group_coordinator(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every node at once (each its own process group), SIGKILL what still runs after ``timeout_s``.

        One at a time, the last nodes wait for a quorum that their stopped peers no longer form."""
        procs = [n.proc for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a crash)."""
        self.nodes[node_id].kill()

    def restart(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start a killed node again on its log directory and ports."""
        node = self.nodes[node_id]
        node.launch()
        node.wait_ready(timeout_s, coordinator=False)

    def alive(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.proc is not None and n.proc.poll() is None]

    def active_controller(self, timeout_s: float = 60.0) -> int:
        """The node id of the KRaft quorum's leader, from Kafka's own ``kafka-metadata-quorum`` tool."""
        node = self.nodes[self.alive()[0]]
        out = subprocess.run(
            node._java("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", self.bootstrap,
                       "describe", "--status"),
            capture_output=True, text=True, timeout=timeout_s,
        )
        match = re.search(r"LeaderId:\s*(\d+)", out.stdout)
        if not match:
            raise BrokerError(f"no quorum leader in kafka-metadata-quorum's answer: {out.stdout or out.stderr}")
        return int(match.group(1))

    def partition_leaders(self, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
        """Partition -> node id of its leader (-1 while it has none)."""
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=timeout_s)
        return {p: pm.leader for p, pm in md.topics[topic].partitions.items()}

    def tail_log(self, n: int = 40) -> str:
        return "\n\n".join(f"node {i}:\n{node.tail_log(n)}" for i, node in self.nodes.items())

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
