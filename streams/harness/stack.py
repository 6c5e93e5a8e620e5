"""A whole llmens deployment on loopback, as real processes: broker, simulated LLMs, N workers.

Used by `llmens demo`, the benchmarks and the end-to-end tests. Every piece is a real server: Tansu
speaks the Kafka protocol, the simulator speaks the OpenAI chat API over HTTP, workers are separate
`llmens worker` processes with their own RocksDB directories, so killing one is a real crash.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.harness.processes import free_port, stop_process_group
from streams.settings import Settings

log = logging.getLogger("llmens.harness")

__all__ = ["LocalStack", "read_topic"]


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def read_topic(bootstrap: str, topic: str, *, until: int | None = None, timeout_s: float = 60.0,
               idle_s: float | None = None, stop=None) -> list[Any]:
    """Read a topic from the beginning (all partitions, no consumer group); returns the messages.

    Stops after ``until`` messages, after ``idle_s`` without new ones, when ``stop(messages)`` is true,
    or at ``timeout_s``.
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{os.getpid()}-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = c.consume(1000, timeout=0.2)
            for m in batch:
                if m.error() is None:
                    out.append(m)
            if batch:
                last_new = time.monotonic()
            if until is not None and len(out) >= until:
                break
            if stop is not None and stop(out):
                break
            if idle_s is not None and time.monotonic() - last_new > idle_s:
                break
        return out
    finally:
        c.close()


def replay_models(predictions: Path, template: list[dict]) -> list[dict]:
    """One simulated model per recorded ``model`` of a predictions JSONL; family = base model (before ``|``)."""
    names: dict[str, None] = {}
    with open(predictions, "rb") as f:
        for line in f:
            names.setdefault(orjson.loads(line)["model"], None)
    base = {k: v for k, v in (template[0] if template else {}).items() if k in ("latency_ms",)}
    return [{**base, "name": n, "family": n.split("|", 1)[0]} for n in names]


@dataclass
class LocalStack:
    """Broker + simulator + workers. ``with LocalStack(workdir) as s: s.publish(products); s.collect(n)``."""

    workdir: Path
    workers: int = 1
    sim_config: dict | str | Path | None = None
    sim_products: Path | None = None
    replay: Path | None = None
    bootstrap: str | None = None
    """A broker to use as is (e.g. a Kafka cluster); else ``broker``, else one is started and owned."""
    broker: Any = None
    """A running local broker to share (the tests' session broker); None: start one (Kafka, or Tansu)."""
    prefer_broker: str | None = None
    """"kafka" or "tansu" to force the kind of broker started here; None: Kafka where Java 17+ is present."""
    embedded: bool = True
    """Apply the local-broker profile to workers (fast group joins)."""
    tansu: bool | None = None
    """Apply the Tansu workarounds; None: when the broker used is a Tansu."""
    topic_prefix: str = "llmens."
    partitions: int = 4
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    endpoint_overrides: dict[str, Any] = field(default_factory=dict)
    llm_names: list[str] | None = None
    """Configure workers with only these simulated models (``None``: all); :meth:`set_llms` changes it live."""
    llms_config: Path | None = None
    """A settings file whose ``llms`` (real servers, e.g. deploy/llmens.real.yaml) and other top-level settings
    replace the simulated models and the defaults; the simulator still runs but nobody asks it."""
    worker_loglevel: str = field(default_factory=lambda: os.environ.get("LLMENS_HARNESS_LOGLEVEL", "warn"))
    """Workers' log level; ``LLMENS_HARNESS_LOGLEVEL=info`` turns it up for a whole test run."""
    sim_port: int = 0
    settings: Settings | None = None
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    sim_proc: subprocess.Popen | None = None
    owned_broker: Any = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        from streams.topics import ensure_topics

        atexit.register(self.stop)  # never leave worker or simulator processes behind
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind (and stop children) on SIGTERM
        if self.bootstrap is None and self.broker is None:
            from streams.harness.brokers.choice import start_local_broker

            self.broker = self.owned_broker = start_local_broker(self.workdir / "broker", self.prefer_broker)
        if self.broker is not None:
            self.bootstrap = self.broker.bootstrap
        if self.tansu is None:
            self.tansu = getattr(self.broker, "name", "") == "Tansu"
        self.start_simulator()
        self.settings = self._write_settings()
        ensure_topics(self.settings)
        for i in range(self.workers):
            self.start_worker(i)
        for i in range(self.workers):
            self.wait_worker_ready(i)
        return self

    def start_simulator(self) -> None:
        from llmens_core.llm.simulator import load_sim_config

        cfg = load_sim_config(self.sim_config).model_dump(mode="json")
        if self.sim_products is not None:
            cfg["products"] = str(self.sim_products)
        if self.replay is not None:
            cfg["mode"] = "replay"
            cfg["predictions"] = str(self.replay)
            if not self.sim_config:
                cfg["models"] = replay_models(self.replay, cfg.get("models") or [])
        self.sim_config_path = self.workdir / "sim.yaml"
        self.sim_config_path.write_text(yaml.safe_dump(cfg))
        self.sim_port = free_port()
        self.sim_proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "sim-llm", "--config", str(self.sim_config_path),
             "--port", str(self.sim_port)],
            stdout=open(self.workdir / "sim.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"{self.sim_url}/models", 30, self.sim_proc)

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}/v1"

    def _endpoints(self, names: list[str] | None) -> list[dict]:
        from llmens_core.llm.simulator import endpoints_for, load_sim_config

        if self.llms_config is not None:
            from llmens_core.llm.config import load_endpoints
            endpoints = load_endpoints(self.llms_config)
        else:
            endpoints = endpoints_for(load_sim_config(self.sim_config_path), self.sim_url, **self.endpoint_overrides)
        if names is not None:
            by_name = {e.name: e for e in endpoints}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ValueError(f"the simulator serves no model {missing}; it has {sorted(by_name)}")
            endpoints = [by_name[n] for n in names]
        return [e.model_dump(mode="json") for e in endpoints]

    def _write_settings(self) -> Settings:
        raw = {
            "kafka": {"bootstrap": self.bootstrap, "embedded": self.embedded, "tansu": bool(self.tansu),
                      "topic_prefix": self.topic_prefix, "app_id": f"{self.topic_prefix}workers"},
            "topics": {"partitions": self.partitions, "model_partitions": 2},
            "llms": self._endpoints(self.llm_names),
            **({k: v for k, v in yaml.safe_load(Path(self.llms_config).read_text()).items() if k != "llms"}
               if self.llms_config is not None else {}),
            **self.settings_overrides,
        }
        self.config_path = self.workdir / "llmens.yaml"
        self.write_config(raw)
        return Settings(**raw)

    def write_config(self, raw: dict[str, Any]) -> None:
        """Replace the workers' settings file at once (write aside, then rename: a reader never sees half)."""
        self.config_data = raw
        tmp = self.config_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(raw))
        os.replace(tmp, self.config_path)

    def set_llms(self, names: list[str]) -> None:
        """Rewrite the settings file with these simulated models as the LLMs (running workers pick it up)."""
        self.llm_names = list(names)
        self.write_config({**self.config_data, "llms": self._endpoints(self.llm_names)})

    def worker_port(self, i: int) -> int:
        if not hasattr(self, "_ports"):
            self._ports: dict[int, int] = {}
        if i not in self._ports:
            self._ports[i] = free_port()
        return self._ports[i]

    def start_worker(self, i: int, *, fresh_state: bool = False) -> subprocess.Popen:
        """Start worker ``i``; ``fresh_state`` gives it an empty data directory (a new machine)."""
        env = {**os.environ, "LLMENS_CONFIG": str(self.config_path)}
        data = self.workdir / f"worker{i}"
        if fresh_state:
            data = self.workdir / f"worker{i}-{time.time_ns()}"
        data.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--data-dir", str(data),
             "--web-port", str(self.worker_port(i)), "--loglevel", self.worker_loglevel],
            env=env, stdout=open(self.workdir / f"worker{i}.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.procs[i] = proc
        return proc

    def wait_worker_ready(self, i: int, timeout_s: float = 60) -> None:
        _wait_http(f"http://127.0.0.1:{self.worker_port(i)}/healthz", timeout_s, self.procs[i])

    def worker_json(self, i: int, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.worker_port(i)}{path}", timeout=5) as r:
            return orjson.loads(r.read())

    def dump_diagnostics(self, reason: str) -> Path:
        """Write every live worker's /counters (partitions, fetch positions, in-flight products) and
        /debug/tasks to ``workdir/diagnostics.json``, for diagnosing a stall after the fact."""
        out: dict[str, Any] = {"reason": reason, "time": time.time(), "workers": {}}
        for i in sorted(self.procs):
            got = {}
            for path in ("/counters", "/debug/tasks"):
                try:
                    got[path] = self.worker_json(i, path)
                except (OSError, ValueError) as e:
                    got[path] = f"unavailable: {e}"
            out["workers"][str(i)] = got
        dest = self.workdir / "diagnostics.json"
        dest.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
        log.warning("%s; worker diagnostics in %s", reason, dest)
        return dest

    def kill_worker(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(i)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop_worker(self, i: int, timeout_s: float = 20) -> None:
        proc = self.procs.pop(i, None)
        if proc is not None:
            stop_process_group(proc, timeout_s)

    def stop(self) -> None:
        for i in list(self.procs):
            self.stop_worker(i)
        if self.sim_proc is not None:
            stop_process_group(self.sim_proc, 10)
            self.sim_proc = None
        if self.owned_broker is not None:
            self.owned_broker.stop()
            self.owned_broker = None

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data ------------------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        assert self.settings is not None
        return self.settings.topic(name)

    def produce(self, topic_field: str, records: Iterable[tuple[bytes | None, bytes]], timeout_s: float = 60.0) -> int:
        """Send ``records`` to the topic of ``topic_field``; returns how many the broker acknowledged.

        Raises RuntimeError when one is not acknowledged within ``timeout_s`` (counting a record handed to
        the client as published hid undelivered records from the drills' accounting)."""
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "log_level": 0,
                      "enable.idempotence": True, "message.timeout.ms": int(timeout_s * 1000)})
        n, errors = 0, []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                errors.append(err)

        for key, value in records:
            while True:
                try:
                    p.produce(self.topic(topic_field), key=key, value=value, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
            if n % 1000 == 0:
                p.poll(0)
        left = p.flush(timeout_s + 5)
        if left or errors:
            raise RuntimeError(f"{left + len(errors)} of {n} records not acknowledged: "
                               f"{errors[-1] if errors else 'flush timed out'}")
        return n

    def publish(self, products: Iterable[dict]) -> int:
        """Publish product dicts to product-updates, keyed by product_id."""
        return self.produce("product_updates",
                            ((str(p.get("product_id", "")).encode(), orjson.dumps(p)) for p in products))

    def read(self, topic_field: str, **kw) -> list[Any]:
        return read_topic(self.bootstrap, self.topic(topic_field), **kw)

    def decisions(self, expected: int | set, timeout_s: float = 120.0, settle_s: float = 0.0) -> list[dict]:
        """Decisions read from the beginning until ``expected`` distinct (product, version, attribute) keys
        (a count or the set of keys) are in, then until ``settle_s`` pass without a new one (revisions)."""
        want = expected if isinstance(expected, int) else len(expected)
        seen: set = set()
        parsed: list[dict] = []

        def covered(msgs) -> bool:
            for m in msgs[len(parsed):]:
                d = orjson.loads(m.value())
                parsed.append(d)
                seen.add((d["product_id"], d["version"], d["attribute"]))
            return len(seen) >= want

        start = time.monotonic()
        msgs = self.read("product_attributes", stop=covered, timeout_s=timeout_s)
        if len(seen) < want:
            self.dump_diagnostics(f"decisions: {len(seen)} of {want} keys after {timeout_s:.0f} s")
        if settle_s > 0:
            left = max(1.0, timeout_s - (time.monotonic() - start))
            msgs = self.read("product_attributes", idle_s=settle_s, timeout_s=left)
        return [orjson.loads(m.value()) for m in msgs]
