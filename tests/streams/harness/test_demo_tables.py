"""The demo's result tables fit an 80-column terminal without cutting a header."""

from __future__ import annotations

from rich.console import Console

from streams.harness.demo import _print_tables, accuracy_table, weights_table

LLMS = ["sim-large", "sim-careful", "sim-flash", "sim-small", "sim-tiny"]


def _render(table) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_the_accuracy_and_weights_tables_fit_80_columns_with_whole_headers():
    row = {m: 0.9 for m in LLMS} | {"n": 123, "majority_vote": 0.91, "ensemble": 0.95}
    accuracy = {a: row for a in ("color_family", "gender", "age_group", "material", "sport_type")}
    models = {a: {"weight": {m: 1.5 for m in LLMS}, "version": 42, "n_items": 400} for a in accuracy}
    for text in (_render(accuracy_table(accuracy)), _render(weights_table(models, LLMS))):
        assert max(map(len, text.splitlines())) <= 80
        assert "…" not in text
    header = _render(accuracy_table(accuracy))
    assert all(h in header for h in ("careful", "majority", "ensemble", "color_family"))


def test_the_summary_ends_with_the_cost_per_1000_decisions_within_80_columns():
    row = {m: 0.9 for m in LLMS} | {"n": 123, "majority_vote": 0.91, "ensemble": 0.95}
    accuracy = {"gender": row}
    models = {"gender": {"weight": {m: 1.5 for m in LLMS}, "version": 42, "n_items": 400}}
    counters = {"worker": {"decisions": 2000, "adaptive_confident": 1500},
                "llm": {m: {"requests": 900, "retries": 0, "cost_usd": 1.25 + i} for i, m in enumerate(LLMS)}}
    console = Console(width=80, record=True, color_system=None)
    _print_tables(console, accuracy, models, counters, [])
    lines = console.export_text().splitlines()
    assert lines[-1] == "LLM cost: $8.1250 per 1,000 decisions ($16.2500 in all; adaptive querying)"
    assert max(map(len, lines)) <= 80
