"""What a new user meets first: one clear line for a missing broker, an oversized product, nothing to score."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.harness.processes import free_port
from streams.harness.publishing import MAX_EVENT_BYTES, iter_products


@pytest.mark.parametrize("command", [["lag"], ["tail", "--max", "1"], ["publish", "{file}"]])
def test_no_broker_gives_one_clear_line_and_exit_2_at_once(tmp_path, command):
    products = tmp_path / "p.jsonl"
    products.write_text('{"product_id": "a", "title": "Red shoe"}\n')
    args = [a.replace("{file}", str(products)) for a in command]
    started = time.monotonic()
    res = CliRunner().invoke(app, [*args, "--bootstrap", f"127.0.0.1:{free_port()}"])
    assert res.exit_code == 2 and "no Kafka broker answers at 127.0.0.1:" in res.output
    assert len(res.output.strip().splitlines()) == 1 and time.monotonic() - started < 10


def test_an_oversized_product_line_is_reported_and_the_others_are_kept(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [{"product_id": "a", "title": "Red shoe"}, {"product_id": "big", "title": "x" * 2_000_000},
             {"product_id": "c", "title": "Blue hat"}]
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    rows = list(iter_products(path))
    assert [(n, rec is not None) for n, rec, _ in rows] == [(1, True), (2, False), (3, True)]
    assert rows[1][2].startswith("event too large") and str(MAX_EVENT_BYTES) in rows[1][2]


def test_evaluate_with_no_overlapping_items_says_so_and_exits_2(tmp_path):
    (tmp_path / "a.csv").write_text("item,worker,label\ni1,w1,x\ni1,w2,y\n")
    (tmp_path / "t.csv").write_text("item,label\nother,x\n")
    res = CliRunner().invoke(app, ["evaluate", "--answers", str(tmp_path / "a.csv"), "--truth",
                                   str(tmp_path / "t.csv")])
    assert res.exit_code == 2 and "nothing to score" in res.output and "nan" not in res.output


def test_version_and_help_fit_80_columns():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("llmens ")
    for cmd in (["--help"], ["evaluate", "--help"], ["lag", "--help"], ["worker", "--help"],
                ["backfill", "--help"]):
        out = CliRunner().invoke(app, cmd, terminal_width=80).output
        assert "<bool>" not in out and max(map(len, out.splitlines())) <= 80, cmd


def test_the_local_settings_file_points_the_worker_at_llmens_broker_and_sim_llm():
    from streams.settings import load_settings

    s = load_settings(Path(__file__).resolve().parents[3] / "deploy" / "llmens.local.yaml")
    assert s.kafka.bootstrap == "127.0.0.1:9092" and s.kafka.embedded and not s.kafka.tansu
    assert len(s.llms) == 5 and {e.base_url for e in s.llms} == {"http://127.0.0.1:8089/v1"}
