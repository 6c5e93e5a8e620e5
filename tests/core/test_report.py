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


def test_report_shows_the_student_as_a_member_with_its_part(tmp_path):
    """The student (issue 33) is a member of the DS model (worker ``student``): its confusion matrix and weight
    are shown with the LLMs'; a worker's /student page adds what it learnt and decided alone."""
    from streams.cli import app

    rows = [{**r, "llm": "student" if r["llm"] == "sim-careful" else r["llm"]} for r in _votes()
            if r["attribute"] == "gender"]
    m = OnlineDawidSkene()
    for _ in range(3):
        m.partial_fit([r["product_id"] for r in rows], [r["llm"] for r in rows], [r["label"] for r in rows])
    student = {"enabled": True, "roles": {"gender": {"alone": 30, "member": 60, "abstain": 10}},
               "students": {"gender": {"version": 7, "n_learnt": 420, "agreement": 0.93,
                                       "text": {"agreement": 0.95, "window": 300, "scored": 380, "threshold": 0.9},
                                       "empty": {"agreement": None, "window": 0, "scored": 0, "threshold": None}}}}
    sf, stf = tmp_path / "model.json", tmp_path / "student.json"
    sf.write_bytes(orjson.dumps({"gender": m.summary()}))
    stf.write_bytes(orjson.dumps(student))
    res = CliRunner().invoke(app, ["report", "--summary", str(sf), "--student", str(stf), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<tr><td>student</td>" in page  # a member's accuracy and weight row
    assert "decided alone 30 of this worker's 100 decisions (30.0%)" in page and "420 products learnt" in page
    assert "<td>text</td><td>0.950</td><td>300</td><td>0.9</td>" in page and "not licensed" in page
    assert "student" in m.summary()["confusion"]
    bad = CliRunner().invoke(app, ["report", "--summary", str(sf), "--student", str(tmp_path / "missing.json"),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "cannot read the students" in bad.output
