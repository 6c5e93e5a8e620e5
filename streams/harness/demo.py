"""`llmens demo`: the whole system on this machine, end to end, in about a minute.

Starts the embedded broker, the LLM simulator (5 simulated models of different quality, over real HTTP)
and one worker process; publishes the shipped OA-Mine demo catalogue; waits for every decision; then
prints each model's accuracy against the ensemble's, the learned weights, the final consumer lag and the LLM
cost per 1,000 decisions (:mod:`llmens_core.costs`), writes the report (with the cost per LLM), and stops
everything it started.
"""

from __future__ import annotations

import os
import tempfile
import time
from importlib import resources
from pathlib import Path

import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmens_core.costs import cost_line, cost_summary, querying_mode
from llmens_core.scoring import gold_labels, score_decisions
from streams.harness.stack import LocalStack

__all__ = ["demo_products", "run_demo"]


def demo_products(path: Path | None = None) -> tuple[list[dict], dict]:
    """Product events asking each product's annotated attributes, and the gold kept aside for scoring."""
    raw = Path(path).read_bytes() if path else (
        resources.files("llmens_core.data").joinpath("demo_products.jsonl").read_bytes())
    recs = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    events = [{"product_id": r["product_id"], "version": 1, "title": r["title"],
               "description": r.get("description"), "category": r.get("category"),
               "attributes": sorted(r["attributes"])} for r in recs if r.get("attributes")]
    return events, gold_labels(recs)


def run_demo(out_dir: Path = Path("llmens-demo-report"), products: Path | None = None,
             console: Console | None = None, timeout_s: float = 150.0, broker: str | None = None,
             llms: Path | None = None, limit: int | None = None) -> dict:
    """Run the demo; returns the per-attribute accuracy table (also printed).

    ``broker`` is "kafka" or "tansu" (default: Apache Kafka where Java 17+ is present, else Tansu); ``llms`` a
    settings file with real LLM endpoints (deploy/llmens.real.yaml) instead of the simulator's; ``limit``
    only the first N products.
    """
    from llmens_core.report import write_report
    from streams.lag import consumer_lag

    console = console or Console()
    events, gold = demo_products(products)
    events = events[:limit] if limit else events
    want = {(e["product_id"], e["version"], a) for e in events for a in e["attributes"]}
    with tempfile.TemporaryDirectory(prefix="llmens-demo-") as tmp:
        console.print("[bold]llmens demo[/bold]: a local broker, " + (
            f"the real LLMs of {llms}" if llms else "5 simulated LLMs over HTTP (a test tool, not real models)")
            + ", 1 worker")
        t0 = time.monotonic()
        with LocalStack(Path(tmp), workers=1, sim_products=products, worker_loglevel="warn", prefer_broker=broker,
                        endpoint_overrides={"max_concurrency": 64}, llms_config=llms) as stack:
            console.print(f"  broker: {stack.broker.name} {stack.broker.version} at {stack.bootstrap} "
                          f"(all up in {time.monotonic() - t0:.1f}s)")
            console.print(f"  simulator {stack.sim_url}  worker http://127.0.0.1:{stack.worker_port(0)}/metrics")
            stack.publish(events)
            console.print(f"  published {len(events)} OA-Mine products asking {len(want)} attribute values")
            decisions = _follow(stack, want, console, timeout_s)
            time.sleep(2.0)  # let the learner publish the last model versions
            decisions += [orjson.loads(m.value()) for m in
                          stack.read("product_attributes", idle_s=1.0, timeout_s=10)][len(decisions):]
            models = stack.worker_json(0, "/model")
            counters = stack.worker_json(0, "/counters")
            lag = consumer_lag(stack.bootstrap, groups=[stack.settings.kafka.app_id],
                               topics=[stack.topic("product_updates")])
        accuracy = score_decisions(decisions, gold)
        _print_tables(console, accuracy, models, counters, lag)
        index = write_report(models, out_dir, counters=counters)
        console.print(f"report: {index}  ({time.monotonic() - t0:.0f}s in all)")
    return accuracy


def _follow(stack: LocalStack, want: set, console: Console, timeout_s: float) -> list[dict]:
    seen: set = set()
    decisions: list[dict] = []
    columns = (TextColumn("  deciding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("decisions", total=len(want))

        def stop(msgs) -> bool:
            for m in msgs[len(decisions):]:
                d = orjson.loads(m.value())
                decisions.append(d)
                seen.add((d["product_id"], d["version"], d["attribute"]))
            progress.update(task, completed=len(seen & want))
            return want <= seen

        stack.read("product_attributes", stop=stop, timeout_s=timeout_s)
    if not want <= seen:
        raise RuntimeError(f"only {len(seen & want)} of {len(want)} decisions arrived in {timeout_s:.0f}s")
    return decisions


def _short_names(llms: list[str]) -> list[str]:
    prefix = os.path.commonprefix(llms) if len(llms) > 1 else ""
    return [m[len(prefix):] or m for m in llms]


def _compact_table(title: str) -> Table:
    """No vertical rules, one space between columns: the demo's tables fit an 80-column terminal."""
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), collapse_padding=True)


def accuracy_table(accuracy: dict) -> Table:
    """Per attribute: items, every LLM's accuracy (best in bold), majority vote and the ensemble."""
    llms = sorted({k for row in accuracy.values() for k in row} - {"n", "ensemble", "majority_vote"})
    t = _compact_table("Accuracy against gold (OA-Mine annotations)")
    t.add_column("attribute", no_wrap=True)
    t.add_column("n", justify="right")
    for name in _short_names(llms):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("majority", justify="right", no_wrap=True)
    t.add_column("ensemble", justify="right", style="bold green", no_wrap=True)
    for attr, row in accuracy.items():
        best = max(row[m] for m in llms)
        cells = [f"[bold]{row[m]:.3f}[/bold]" if row[m] == best else f"{row[m]:.3f}" for m in llms]
        t.add_row(attr, str(row["n"]), *cells, f"{row['majority_vote']:.3f}", f"{row['ensemble']:.3f}")
    return t


def weights_table(models: dict, llms: list[str]) -> Table:
    """Per attribute: every LLM's learned weight (log-odds), the DS model version and items seen."""
    w = _compact_table("Learned weights (log-odds), DS model version, items")
    w.add_column("attribute", no_wrap=True)
    for name in _short_names(llms):
        w.add_column(name, justify="right", no_wrap=True)
    w.add_column("version", justify="right")
    w.add_column("items", justify="right")
    for attr, summary in sorted(models.items()):
        weights = summary.get("weight", {})
        w.add_row(attr, *[f"{weights.get(m, float('nan')):.2f}" for m in llms], str(summary.get("version")),
                  f"{summary.get('n_items', 0):.0f}")
    return w


def _print_tables(console: Console, accuracy: dict, models: dict, counters: dict, lag: list) -> None:
    llms = sorted({k for row in accuracy.values() for k in row} - {"n", "ensemble", "majority_vote"})
    console.print(accuracy_table(accuracy))
    console.print(weights_table(models, llms))

    total_lag = sum((r.lag or 0) for r in lag)
    llm = counters.get("llm", {})
    calls = sum(c.get("requests", 0) for c in llm.values())
    retries = sum(c.get("retries", 0) for c in llm.values())
    worker = counters.get("worker", {})
    console.print(f"final consumer lag: [bold]{total_lag}[/bold] over {len(lag)} partitions; "
                  f"LLM requests {calls} (retries {retries}); decisions {int(worker.get('decisions', 0))}, "
                  f"revisions {int(worker.get('revisions', 0))}, dead letters {int(worker.get('dead_letters', 0))}")
    console.print(cost_line(cost_summary(llm, worker.get("decisions", 0)), querying_mode(worker)))
