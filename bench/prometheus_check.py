"""Every Grafana dashboard query and every alert expression, asked of a real Prometheus scraping real workers.

    python bench/prometheus_check.py [--seconds 150] [--cluster 3] [--json]

Starts what it needs on loopback: a Kafka broker (or a three-node cluster), the LLM simulator, two llmens
workers (production timings: 60 s session timeout) and Debian's ``prometheus`` (scraping both workers every
2 s, with deploy/prometheus/alerts.yml loaded). Then it drives the stream into every state a panel or an alert
watches: products published faster than two workers limited to 6 products in flight can decide (lag grows),
second versions of some products (superseded), malformed events (dead letters), an LLM endpoint nobody
listens on (errors, open circuit breaker), and worker 1 frozen with SIGSTOP for 50 s (a stalled partition).
Every 3 s it asks Prometheus's HTTP API for each query (dashboard variables at their "All" value) and notes
the most series each returned. A query that never returned a series fails the check; the last line is
``queries_with_data=N/M``. Without Prometheus it says how to install it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pipeline import load_products  # noqa: E402
from streams.harness.processes import free_port, stop_process_group  # noqa: E402
from streams.harness.stack import LocalStack  # noqa: E402

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DEMO = REPO / "llmens_core" / "data" / "demo_products.jsonl"
INSTALL_HINT = ("Prometheus is not installed: on Debian/Ubuntu `sudo apt-get install prometheus` (it brings "
                "promtool too); elsewhere the release tarball from https://prometheus.io/download/ and put "
                "`prometheus` and `promtool` on PATH")
BAD_EVENTS = [b"{not json", b'{"product_id": "bad-1"}', b"[]"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of the Grafana dashboards."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        variables = {v["name"]: v.get("allValue") or ".*" for v in dash.get("templating", {}).get("list", [])}

        def panels(container):
            for p in container.get("panels", []):
                yield p
                yield from panels(p)

        for panel in panels(dash):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((f"panel {panel.get('title')!r}", substitute(target["expr"], variables)))
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("definition") or (var.get("query") or {}).get("query", "")
            found = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", query or "")
            if found:  # what Grafana asks for label_values(metric, label)
                out.append((f"variable ${var['name']}", f"count by ({found.group(2)}) ({found.group(1)})"))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return expr


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(f"alert {r['alert']}", r["expr"].strip()) for g in rules["groups"] for r in g["rules"]]


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping ``targets`` every 2 s with the alert rules."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
                  "rule_files": [str(ALERTS)],
                  "scrape_configs": [{"job_name": "llmens-worker", "static_configs": [{"targets": targets}]}]}
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(workdir / "prometheus.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError("prometheus was not ready in time")

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = orjson.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return body["data"]["result"]

    def targets_up(self) -> int:
        return sum(float(s["value"][1]) == 1 for s in self.query('up{job="llmens-worker"}'))

    def stop(self) -> None:
        stop_process_group(self.proc, 10)


class Watcher(threading.Thread):
    """Asks Prometheus for every query every ``every_s`` seconds; keeps the most series each returned."""

    def __init__(self, prom: Prometheus, queries: list[tuple[str, str]], every_s: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.prom, self.queries, self.every_s = prom, queries, every_s
        self.most: dict[str, int] = {q: 0 for _, q in queries}
        self.errors: dict[str, str] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            for _, q in self.queries:
                try:
                    self.most[q] = max(self.most[q], len(self.prom.query(q)))
                except Exception as exc:  # noqa: BLE001 - a bad query is reported, not fatal
                    self.errors[q] = str(exc)[:300]


def drive(stack: LocalStack, seconds: float, log) -> None:
    """The stream the queries watch: overload, second versions, bad events, a dead LLM, a frozen worker."""
    raw = dict(stack.config_data)
    dead = {"name": "offline-llm", "provider": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "model": "offline", "max_retries": 1}
    stack.write_config({**raw, "llms": [*raw["llms"], dead]})  # the workers re-read their llms within 5 s
    log("added an LLM endpoint nobody listens on")
    products = [{k: v for k, v in p.items() if k != "gold"} for p in load_products(DEMO, None, 20)]
    rate, started, sent, frozen, bad = 40.0, time.monotonic(), 0, None, 0
    while time.monotonic() - started < seconds:
        elapsed = time.monotonic() - started
        due = min(len(products), int(elapsed * rate))
        if due > sent:
            batch = products[sent:due]
            stack.publish(batch)
            stack.publish([{**p, "version": 2} for p in batch[::5]])  # superseded while v1 is in flight
            sent = due
        if elapsed >= bad * 5:  # a malformed event every 5 s, keyed apart so each worker meets some
            stack.produce("product_updates", [(f"bad-{bad}".encode(), BAD_EVENTS[bad % len(BAD_EVENTS)])])
            bad += 1
        if frozen is None and elapsed > seconds * 0.35:
            os.killpg(stack.procs[1].pid, signal.SIGSTOP)
            frozen = time.monotonic()
            log(f"worker 1 frozen (SIGSTOP) at {sent} published")
        if frozen is not None and frozen > 0 and time.monotonic() - frozen > 50:
            os.killpg(stack.procs[1].pid, signal.SIGCONT)
            frozen = 0.0
            log("worker 1 thawed (SIGCONT)")
        time.sleep(1.0)
    if frozen:
        os.killpg(stack.procs[1].pid, signal.SIGCONT)
    log(f"published {sent} products")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=150.0, help="how long the stream runs")
    ap.add_argument("--cluster", type=int, default=0, metavar="N", help="a KRaft cluster of N Kafka nodes")
    ap.add_argument("--json", action="store_true", help="print the per-query results as one JSON line too")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        print(INSTALL_HINT, file=sys.stderr)
        print("queries_with_data=unknown (no prometheus)")
        sys.exit(2)
    queries = dashboard_queries() + alert_queries()
    with tempfile.TemporaryDirectory(prefix="llmens-prom-") as tmp:
        broker = None
        if args.cluster:
            from streams.harness.brokers.cluster import KafkaCluster

            broker = KafkaCluster(Path(tmp) / "cluster", nodes=args.cluster).start()
        stack = LocalStack(Path(tmp) / "stack", workers=2, broker=broker, embedded=False, partitions=8,
                           settings_overrides={"concurrency": 6, "lag_refresh_seconds": 2.0,
                                               "topics": {"partitions": 8, "model_partitions": 2,
                                                          "replication": min(3, args.cluster or 1)}})
        prom = watcher = None
        try:
            stack.start()
            log(f"broker {stack.bootstrap}; workers on ports {[stack.worker_port(i) for i in range(2)]}")
            prom = Prometheus(Path(tmp) / "prometheus", [f"127.0.0.1:{stack.worker_port(i)}" for i in range(2)])
            log(f"prometheus {subprocess.run(['prometheus', '--version'], capture_output=True, text=True).stdout.split(chr(10))[0]}"
                f" on 127.0.0.1:{prom.port}")
            watcher = Watcher(prom, queries)
            watcher.start()
            drive(stack, args.seconds, log)
            time.sleep(10)  # the last scrapes and rule evaluations
            log(f"worker targets up: {prom.targets_up()} of 2")
        finally:
            if watcher is not None:
                watcher.stopping.set()
                watcher.join(30)
            if prom is not None:
                prom.stop()
            stack.stop()
            if broker is not None:
                broker.stop()
    with_data = 0
    for where, q in queries:
        n = watcher.most[q]
        with_data += n > 0
        status = f"{n} series" if n else ("ERROR " + watcher.errors[q] if q in watcher.errors else "NO DATA")
        print(f"{'ok ' if n else 'BAD'} {status:>10}  {where}: {' '.join(q.split())[:150]}")
    if args.json:
        print(orjson.dumps({q: watcher.most[q] for _, q in queries}).decode())
    print(f"queries_with_data={with_data}/{len(queries)}")
    if with_data < len(queries):
        sys.exit(1)


if __name__ == "__main__":
    main()
