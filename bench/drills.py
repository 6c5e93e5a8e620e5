"""Failure drills on a real broker: kill workers and the broker mid-stream, grow the group, lose nothing.

    python bench/drills.py [--products 10000] [--broker kafka|tansu] [--no-guard] [--json]
    python bench/drills.py --cluster 3 [--products 10000] [--json]

One run: a local broker (Apache Kafka KRaft by default where Java 17+ is present), the LLM simulator and
llmens workers as real processes. Products are published at a steady rate while the drill runs this plan:
start with 1 worker, grow to 2; SIGKILL a worker three times (each restarted on its own RocksDB directory);
SIGKILL the broker once and restart it on the same log directory (Apache Kafka only: Tansu keeps nothing);
grow to 3 workers. A few malformed events are sent on purpose. Then it waits for every decision and for lag 0.

Checks: every (product, version, attribute) asked has a final decision (``lost`` counts those without);
copies of a decision at the same revision carry the same value (``conflicting_duplicates``); every
attribute's ``ds-model`` versions only grow on the topic; lag returns to 0; ``dead-letter`` holds the bad events
sent and nothing else (a copy of one redelivered after a worker's death is allowed: input is at least once);
every worker started is alive at the end. ``--no-guard`` runs faust's own commit rule
(``kafka.commit_guard: false``) to show that the drill can fail. The last line is JSON: ``{"broker", "products", "lost", "conflicting_duplicates",
"worker_kills", "broker_restarts", "rebalances", ...}``.

``--cluster 3`` runs the failover drill on a three-node Apache Kafka KRaft cluster (topics replicated 3,
``min.insync.replicas=2``, producers idempotent with acks=all) with 2 workers, growing to 3: it SIGKILLs the
node leading the most product-updates partitions (twice, each restarted), then the active controller
(restarted), and measures the longest stall of decisions after each kill (the longest gap between two
decisions arriving on ``product-attributes`` in the minute after it). Its JSON adds ``leader_kills``,
``controller_kills``, ``stalls`` (per kill) and ``longest_stall_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline import load_products  # noqa: E402
from llmens_core.events import DeadLetter  # noqa: E402
from streams.harness.brokers.choice import start_local_broker  # noqa: E402
from streams.harness.publishing import PacedPublisher  # noqa: E402
from streams.harness.stack import LocalStack  # noqa: E402
from streams.lag import consumer_lag  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "llmens_core" / "data" / "demo_products.jsonl"
BAD_EVENTS = [b"{not json", b'{"product_id": "bad-1"}', b'{"product_id": "bad-2", "version": 1, "title": "T", '
              b'"attributes": ["no_such_attribute"]}', b"[]", b'{"version": -3, "title": ""}']


def publisher_for(stack: LocalStack, products: list[dict], rate: float) -> PacedPublisher:
    """The background stream the drill disturbs: ``products`` at ``rate`` per second, ``sent`` counting only
    what the broker acknowledged (failed deliveries are produced again)."""
    return PacedPublisher(stack.bootstrap, stack.topic("product_updates"), products, rate)


def run_plan(stack: LocalStack, broker, publisher: PacedPublisher, kill_broker: bool, log) -> dict:
    """Kills and growth while the publisher runs; returns what was done."""
    done = {"worker_kills": 0, "broker_restarts": 0, "workers_max": 1}

    def at(fraction: float) -> None:
        while publisher.is_alive() and publisher.sent < fraction * len(publisher.products):
            time.sleep(0.2)

    def kill_and_restart(i: int) -> None:
        stack.kill_worker(i, signal.SIGKILL)
        done["worker_kills"] += 1
        log(f"SIGKILL worker {i} at {publisher.sent} published")
        time.sleep(1.0)
        stack.start_worker(i)
        stack.wait_worker_ready(i, timeout_s=120)

    at(0.1)
    stack.start_worker(1)
    done["workers_max"] = 2
    log(f"grew to 2 workers at {publisher.sent} published")
    for fraction, i in ((0.2, 0), (0.35, 1), (0.5, 0)):
        at(fraction)
        kill_and_restart(i)
    if kill_broker:
        at(0.6)
        broker.kill()
        log(f"SIGKILL broker at {publisher.sent} published")
        time.sleep(2.0)
        broker.restart()
        done["broker_restarts"] += 1
        log("broker restarted on the same log directory")
    at(0.75)
    stack.start_worker(2)
    stack.wait_worker_ready(2, timeout_s=120)
    done["workers_max"] = 3
    log(f"grew to 3 workers at {publisher.sent} published")
    return done


class DecisionClock(threading.Thread):
    """Notes when each decision arrives on product-attributes (its own consumer, no group): stalls are gaps."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.arrivals: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"drill-clock-{time.time_ns()}",
                      "enable.auto.commit": False, "log_level": 0})
        parts = c.list_topics(self.topic, timeout=30).topics[self.topic].partitions
        c.assign([TopicPartition(self.topic, p, 0) for p in parts])
        while not self.stopping.is_set():
            for m in c.consume(500, timeout=0.2):
                if m.error() is None:
                    self.arrivals.append(time.monotonic())
        c.close()

    def longest_gap(self, since: float, window_s: float = 60.0) -> float:
        """The longest time without a decision in ``[since, since + window_s]``."""
        times = [since] + [t for t in self.arrivals if since < t <= since + window_s]
        if len(times) == 1:
            return window_s
        return max(b - a for a, b in zip(times, times[1:]))


def busiest_leader(cluster, topic: str) -> int:
    """The node leading the most partitions of ``topic`` (ties: the lowest id)."""
    leaders = Counter(n for n in cluster.partition_leaders(topic).values() if n >= 0)
    return min(leaders, key=lambda n: (-leaders[n], n))


def run_cluster_plan(stack: LocalStack, cluster, publisher: PacedPublisher, clock: DecisionClock, log) -> dict:
    """Leader kills, a controller kill and growth to 3 workers while the publisher runs."""
    done = {"leader_kills": 0, "controller_kills": 0, "worker_kills": 0, "workers_max": 2, "stalls": []}

    def at(fraction: float) -> None:
        while publisher.is_alive() and publisher.sent < fraction * len(publisher.products):
            time.sleep(0.2)

    def kill_and_restart(node: int, what: str) -> None:
        killed_at = time.monotonic()
        cluster.kill(node)
        log(f"SIGKILL node {node} ({what}) at {publisher.sent} published")
        time.sleep(5.0)
        cluster.restart(node)
        log(f"node {node} restarted on its log directory")
        done["stalls"].append({"kill": what, "node": node, "at": killed_at})

    for fraction in (0.15, 0.35):
        at(fraction)
        kill_and_restart(busiest_leader(cluster, stack.topic("product_updates")), "leader")
        done["leader_kills"] += 1
    at(0.55)
    kill_and_restart(cluster.active_controller(), "controller")
    done["controller_kills"] += 1
    at(0.75)
    stack.start_worker(2)
    stack.wait_worker_ready(2, timeout_s=120)
    done["workers_max"] = 3
    log(f"grew to 3 workers at {publisher.sent} published")
    return done


def check_decisions(decisions: list[dict], want: set) -> dict:
    by_revision: dict[tuple, list] = defaultdict(list)
    for d in decisions:
        by_revision[(d["product_id"], d["version"], d["attribute"], d.get("revision", 0))].append(d)
    decided = {k[:3] for k in by_revision}
    conflicts = {k: v for k, v in by_revision.items() if len({d.get("value") for d in v}) > 1}
    examples = [{"key": list(k), "copies": [{f: d.get(f) for f in ("value", "reason", "model_version", "decided_at",
                                                                     "confidence")} for d in v]}
                for k, v in list(conflicts.items())[:3]]
    return {"lost": len(want - decided), "conflicting_duplicates": len(conflicts),
            "conflicts_by_revision": dict(sorted(Counter(k[3] for k in conflicts).items())),
            "conflict_examples": examples,
            "unexpected_decisions": len(decided - want), "decision_records": len(decisions)}


def where_lost(stack: LocalStack, decisions: list[dict], want: set, started_wall: float) -> dict:
    """Where each lost product sits on ``product-updates`` (partition, offset, seconds into the run), or that it
    is not there at all: a product never written is the publisher's, one on the topic the stream's."""
    decided = {(d["product_id"], d["version"], d["attribute"]) for d in decisions}
    lost_ids = {k[0] for k in want - decided}
    if not lost_ids:
        return {"lost_on_input_topic": 0}
    found = {}
    for m in stack.read("product_updates", idle_s=3.0, timeout_s=120):
        pid = (m.key() or b"").decode(errors="replace")
        if pid in lost_ids:
            found.setdefault(pid, []).append({"partition": m.partition(), "offset": m.offset(),
                                              "at_s": round(m.timestamp()[1] / 1000 - started_wall, 1),
                                              "time": time.strftime("%H:%M:%S", time.localtime(m.timestamp()[1] / 1000))})
    return {"lost_on_input_topic": sum(pid in found for pid in lost_ids),
            "lost_examples": [{"product_id": pid, "copies": found.get(pid, [])} for pid in sorted(lost_ids)[:5]]}


def check_models(stack: LocalStack) -> int:
    """How many times an attribute's ds-model version went down on the topic (0 expected)."""
    last: dict[str, int] = {}
    drops = 0
    for m in stack.read("ds_model", idle_s=2.0, timeout_s=60):
        attribute, version = m.key().decode(), orjson.loads(m.value()).get("version", 0)
        drops += version < last.get(attribute, -1)
        last[attribute] = max(version, last.get(attribute, -1))
    return drops


def check_dead_letters(stack: LocalStack) -> dict:
    letters = [DeadLetter.from_bytes(m.value()) for m in stack.read("dead_letter", idle_s=2.0, timeout_s=60)]
    originals = {dl.original for dl in letters}
    # at least once: a bad event redelivered after a worker's death is dead-lettered again (same bytes)
    return {"dead_letters": len(letters), "dead_letters_only_bad": originals == set(BAD_EVENTS)}


def wait_lag_zero(stack: LocalStack, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    total = -1
    while time.monotonic() < deadline:
        rows = consumer_lag(stack.bootstrap, groups=[stack.settings.kafka.app_id],
                            topics=[stack.topic("product_updates")])
        total = sum(r.lag or 0 for r in rows)
        if rows and total == 0:
            return 0
        time.sleep(2.0)
    return total


def start_broker(args, tmp: Path):
    """The broker of the run: a KRaft cluster with ``--cluster N``, else one node (Kafka or Tansu)."""
    if args.cluster:
        from streams.harness.brokers.cluster import KafkaCluster

        return KafkaCluster(Path(tmp) / "cluster", nodes=args.cluster).start()
    return start_local_broker(Path(tmp) / "broker", args.broker)


def run_drill(args, products: list[dict], want: set, tmp: str, log) -> dict:
    broker = start_broker(args, Path(tmp))
    log(f"broker: {broker.name} {broker.version} at {broker.bootstrap}")
    topics = {"partitions": 8, "model_partitions": 2, "replication": min(3, args.cluster or 1)}
    stack = LocalStack(Path(tmp) / "stack", broker=broker, workers=2 if args.cluster else 1, partitions=8,
                       endpoint_overrides={"max_concurrency": 64}, settings_overrides={"topics": topics})
    clock = None
    try:
        stack.start()
        if args.no_guard:  # every worker started from now on reads commit_guard: false
            raw = dict(stack.config_data)
            raw["kafka"] = {**raw["kafka"], "commit_guard": False}
            stack.write_config(raw)
            stack.stop_worker(0)
            stack.start_worker(0)
            stack.wait_worker_ready(0)
        stack.produce("product_updates", ((b"bad", e) for e in BAD_EVENTS))
        started, started_wall = time.monotonic(), time.time()
        publisher = publisher_for(stack, products, args.rate)
        publisher.start()
        if args.cluster:
            clock = DecisionClock(stack.bootstrap, stack.topic("product_attributes"))
            clock.start()
            done = run_cluster_plan(stack, broker, publisher, clock, log)
        else:
            done = run_plan(stack, broker, publisher, kill_broker=broker.name == "Apache Kafka", log=log)
        publisher.join()
        if publisher.error is not None:
            raise publisher.error
        log(f"published {publisher.sent} (acknowledged; {len(publisher.failures)} failed deliveries produced "
            f"again); waiting for {len(want)} decisions")
        try:
            decisions = stack.decisions(want, timeout_s=args.timeout, settle_s=5.0)
        except Exception as exc:  # noqa: BLE001 - timed out: report what arrived
            log(f"not every decision arrived: {exc}")
            decisions = [orjson.loads(m.value()) for m in stack.read("product_attributes", idle_s=5.0)]
        lag = wait_lag_zero(stack, 120)
        generations, alive = [], 0
        for i, proc in sorted(stack.procs.items()):
            if proc.poll() is None:
                alive += 1
                with contextlib.suppress(Exception):
                    generations.append(stack.worker_json(i, "/healthz").get("generation"))
        if clock is not None:
            for stall in done["stalls"]:
                stall["longest_stall_s"] = round(clock.longest_gap(stall.pop("at")), 1)
            done["longest_stall_s"] = max(s["longest_stall_s"] for s in done["stalls"])
        return {"broker": f"{broker.name} {broker.version}", "products": len(products),
                "guard": not args.no_guard, **check_decisions(decisions, want),
                **where_lost(stack, decisions, want, started_wall), "delivery_retries": len(publisher.failures),
                **done, "rebalances": max([g or 0 for g in generations] or [1]) - 1, "final_lag": lag,
                "workers_alive_at_end": alive,
                "model_version_drops": check_models(stack), **check_dead_letters(stack),
                "seconds": round(time.monotonic() - started, 1)}
    finally:
        if clock is not None:
            clock.stopping.set()
        stack.stop()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=10_000, help="products to publish (demo catalogue copies)")
    ap.add_argument("--rate", type=float, default=120.0, help="products published per second")
    ap.add_argument("--broker", choices=("kafka", "tansu"), default=None, help="default: Kafka where Java 17+")
    ap.add_argument("--cluster", type=int, default=0, metavar="N",
                    help="a KRaft cluster of N Apache Kafka nodes (3): the failover drill")
    ap.add_argument("--no-guard", action="store_true", help="faust's own commit rule (shows the drill can fail)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every decision")
    ap.add_argument("--json", action="store_true", help="(the last line is JSON in any case)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep logs and state here (default: a temporary directory, removed at the end)")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    copies = -(-args.products // 400)
    products = [{k: v for k, v in p.items() if k != "gold"} for p in load_products(DEMO, None, copies)]
    products = products[:args.products]
    want = {(p["product_id"], p["version"], a) for p in products for a in p["attributes"]}
    with contextlib.ExitStack() as scope:
        tmp = str(args.workdir) if args.workdir else scope.enter_context(
            tempfile.TemporaryDirectory(prefix="llmens-drill-"))
        result = run_drill(args, products, want, tmp, log)
    ok = (result["lost"] == 0 and result["conflicting_duplicates"] == 0 and result["final_lag"] == 0
          and result["model_version_drops"] == 0 and result["dead_letters_only_bad"]
          and result["workers_alive_at_end"] == result["workers_max"])  # a worker that died is a failure too
    if args.cluster:
        ok = ok and result["leader_kills"] >= 2 and result["controller_kills"] >= 1
    log("PASS" if ok else "FAIL" + (" (expected without the guard)" if args.no_guard else ""))
    print(orjson.dumps(result).decode())
    if not ok and not args.no_guard:
        sys.exit(1)


if __name__ == "__main__":
    main()
