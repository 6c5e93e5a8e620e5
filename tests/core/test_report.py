"""`llmens report`: PNGs and index.html from a synthetic model summary and from recorded votes."""

from __future__ import annotations

import random

import orjson
from typer.testing import CliRunner

from llmens_core.aggregation.online import OnlineDawidSkene
from llmens_core.report import load_summaries, write_report


def _votes(n=300, seed=1):
    rng = random.Random(seed)
    classes = ["female", "male", "unisex", "none"]
    skill = {"sim-large": 0.9, "sim-careful": 0.8, "sim-flash": 0.7, "sim-small": 0.55, "sim-bad": 0.3}
    rows = []
    for i in range(n):
        truth = rng.choice(classes)
        for w, p in skill.items():
            label = truth if rng.random() < p else rng.choice([c for c in classes if c != truth])
            rows.append({"product_id": f"p{i}", "version": 1, "attribute": "gender", "llm": w, "label": label})
            if w != "sim-bad":
                rows.append({"product_id": f"p{i}", "version": 1, "attribute": "color_family", "llm": w,
                             "label": rng.choice(["red", "blue"]) if rng.random() > p else ("red" if i % 2 else "blue")})
    return rows


def _summary():
    rows = [r for r in _votes() if r["attribute"] == "gender"]
    m = OnlineDawidSkene()
    for _ in range(3):
        m.partial_fit([r["product_id"] for r in rows], [r["llm"] for r in rows], [r["label"] for r in rows])
    return m.summary()


def test_report_from_summary(tmp_path):
    s = _summary()
    summaries = {"gender": s, "empty_attr": OnlineDawidSkene().summary()}
    index = write_report(summaries, tmp_path / "out")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["gender_confusion.png", "gender_weights.png"]
    for p in pngs:
        data = (tmp_path / "out" / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    page = index.read_text()
    assert 'src="gender_confusion.png"' in page and "sim-large" in page and "no learned model yet" in page
    # the best simulated LLM gets the highest estimated accuracy
    assert max(s["accuracy"], key=s["accuracy"].get) == "sim-large"


def test_report_cli_summary_and_votes(tmp_path):
    from streams.cli import app

    sf = tmp_path / "model.json"
    sf.write_bytes(orjson.dumps({"gender": _summary()}))
    res = CliRunner().invoke(app, ["report", "--summary", str(sf), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "index.html").exists() and (tmp_path / "a" / "gender_confusion.png").exists()

    vf = tmp_path / "votes.jsonl"
    vf.write_bytes(b"\n".join(orjson.dumps(r) for r in _votes(150)) + b"\n")
    assert set(load_summaries(votes=vf)) == {"gender", "color_family"}
    res = CliRunner().invoke(app, ["report", "--votes", str(vf), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "b").glob("*.png")} == {
        "gender_confusion.png", "gender_weights.png", "color_family_confusion.png", "color_family_weights.png"}


def test_report_cost_section_per_llm_and_per_1000_decisions(tmp_path):
    counters = {"worker": {"decisions": 400, "adaptive_confident": 90},
                "llm": {"dear": {"requests": 100, "tokens_in": 20_000, "tokens_out": 1_000, "cost_usd": 0.075},
                        "cheap": {"requests": 100, "tokens_in": 20_000, "tokens_out": 1_000, "cost_usd": 0.0025}}}
    page = write_report({"gender": _summary()}, tmp_path / "out", counters=counters).read_text()
    assert "<h2>LLM cost</h2>" in page and "adaptive querying" in page
    assert "<td>dear</td><td>100</td><td>20,000</td><td>1,000</td><td>0.0750</td><td>0.1875</td>" in page
    assert "<th>all</th><th>200</th><th></th><th></th><th>0.0775</th><th>0.1938</th>" in page
    assert "LLM cost" not in write_report({"gender": _summary()}, tmp_path / "bare").read_text()
