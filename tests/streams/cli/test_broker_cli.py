"""`llmens broker` as a service manager runs it: SIGTERM must stop the Kafka JVM, not only the Python parent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.harness.brokers.kafka import java_major_version
from streams.harness.processes import port_in_use

needs_java = pytest.mark.skipif((java_major_version() or 0) < 17, reason="Apache Kafka needs Java 17+")


def _jvms_under(log_dir: Path) -> list[int]:
    """Pids of the java processes whose command line names ``log_dir`` (ours alone: a fresh tmp path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "kafka.Kafka" in cmd and str(log_dir) in cmd:
                pids.append(int(entry.name))
    return pids


@pytest.mark.integration
@needs_java
def test_sigterm_stops_the_kafka_jvm_and_closes_its_port(tmp_path):
    log_dir = tmp_path / "broker"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--port", "0", "--log-dir",
                             str(log_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r" at 127\.0\.0\.1:(\d+) ", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(match.group(1))
        assert port_in_use("127.0.0.1", port) and _jvms_under(log_dir)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        deadline = time.monotonic() + 10
        while (port_in_use("127.0.0.1", port) or _jvms_under(log_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not port_in_use("127.0.0.1", port)
        assert _jvms_under(log_dir) == []
    finally:
        for pid in _jvms_under(log_dir):  # only if the assertions failed: never leave a JVM behind
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_cluster_of_tansu_is_refused_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from streams.cli import app

    res = CliRunner().invoke(app, ["broker", "--nodes", "3", "--kind", "tansu", "--log-dir", str(tmp_path)])
    assert res.exit_code == 2 and res.output.strip() == (
        "error: a cluster (--nodes > 1) needs Apache Kafka (Java 17+ on PATH)")
