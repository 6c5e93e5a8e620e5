"""Estimator API, degenerate inputs, evaluate() and the CLI, on small synthetic data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from agg_synth import make_confusions, sample_votes
from hypothesis import given
from hypothesis import strategies as st

from llmens_core.aggregation import (
    METHODS,
    DawidSkene,
    MajorityVote,
    NotFittedError,
    OneCoinDawidSkene,
    WeightedMajorityVote,
    default_aggregator,
)
from llmens_core.aggregation.evaluate import majority_tie_split, sign_test

ALL = [
    MajorityVote,
    lambda: WeightedMajorityVote({"a": 2.0}),
    OneCoinDawidSkene,
    DawidSkene,
    default_aggregator,
    lambda: DawidSkene(prior_strength=0.0, class_prior_strength=0.0),
]


def test_exports():
    import llmens_core.aggregation as agg

    for name in agg.__all__:
        assert hasattr(agg, name)
    assert set(METHODS) == {"default", "mv", "wmv", "onecoin", "ds", "online"}


def test_majority_vote_and_weights():
    it = ["i1", "i1", "i1", "i2", "i2"]
    wk = ["a", "b", "c", "a", "b"]
    lb = ["x", "y", "y", "x", None]
    mv = MajorityVote().fit(it, wk, lb)
    assert mv.predict().tolist() == ["y", "x"]
    np.testing.assert_allclose(mv.predict_proba()[0], [1 / 3, 2 / 3])
    wmv = WeightedMajorityVote({"a": 3.0}).fit(it, wk, lb)
    assert wmv.predict().tolist() == ["x", "x"]


@pytest.mark.parametrize("make", ALL)
def test_degenerate_inputs_never_nan(make):
    cases = [
        (["i"], ["w"], ["x"]),  # one vote
        (["i", "j"], ["w", "w"], ["x", "x"]),  # one worker, one class
        (
            ["i", "j", "j"],
            ["w", "w", "v"],
            ["x", None, None],
        ),  # worker with no votes, item with only abstentions
        ([1, 2, 3], ["w", "w", "w"], ["x", "y", "z"]),  # int items
        (["i", "i", 3], ["w", 7, "w"], ["x", "y", "x"]),  # mixed id types
    ]
    for it, wk, lb in cases:
        m = make().fit(it, wk, lb)
        p = m.predict_proba()
        assert p.shape == (len(m.items_), len(m.classes_))
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
        assert len(m.predict()) == len(m.items_)


@pytest.mark.parametrize("make", ALL)
def test_all_abstain_is_a_clear_error(make):
    with pytest.raises(ValueError, match="abstain"):
        make().fit(["i", "j"], ["w", "v"], [None, None])
    with pytest.raises(ValueError, match="same length"):
        make().fit(["i"], ["w", "v"], ["x"])


def test_not_fitted_and_unseen_labels():
    with pytest.raises(NotFittedError):
        DawidSkene().predict()
    with pytest.raises(ValueError, match="not in `classes`"):
        DawidSkene(classes=["x", "y"]).fit(["i"], ["w"], ["z"])
    m = DawidSkene().fit(["i", "i", "j"], ["a", "b", "a"], ["x", "x", "y"])
    # new votes: unknown worker uses the prior, unknown label ignored
    p = m.predict_proba(["k", "k", "k"], ["a", "new", "a"], ["x", "x", "never"])
    assert p.shape == (1, 2) and np.isfinite(p).all()
    assert m.predict(["k"], ["new"], ["y"]).tolist() == ["y"]


def test_fit_predict_matches_fit_then_predict(rng):
    conf = make_confusions(rng, 4, 3)
    it, wk, lb, _ = sample_votes(rng, conf, 200)
    a = DawidSkene().fit_predict_proba(it, wk, lb)
    b = DawidSkene().fit(it, wk, lb).predict_proba()
    np.testing.assert_allclose(a, b)
    # predicting the training votes again through the "new votes" path gives the same posterior
    m = DawidSkene(prior_strength=1.0).fit(it, wk, lb)
    np.testing.assert_allclose(m.predict_proba(it, wk, lb), m.predict_proba(), atol=1e-9)


def test_pattern_compression_is_exact(rng):
    conf = make_confusions(rng, 5, 3)
    it, wk, lb, _ = sample_votes(rng, conf, 3000)
    a = DawidSkene(compress=True).fit(it, wk, lb)
    b = DawidSkene(compress=False).fit(it, wk, lb)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.confusion_, b.confusion_, atol=1e-10)
    np.testing.assert_allclose(a.predict_proba(), b.predict_proba(), atol=1e-10)


def test_dependence_found_from_votes_resists_a_correlated_block(rng):
    """Three near-copies of a mediocre worker sway textbook DS against four better independent ones; the
    default finds the block from the votes alone (names carry no family) and down-weights it. (A block that
    outnumbers the independent workers is not identifiable from agreements: see llmens_core.aggregation.dependence.)"""
    n, K = 3000, 3
    z = rng.integers(0, K, n)

    def noisy(acc, base=None):
        wrong = (z + rng.integers(1, K, n)) % K
        if base is not None:
            return base
        return np.where(rng.random(n) < acc, z, wrong)

    shared = noisy(0.6)
    cols = {f"w{r}": np.where(rng.random(n) < 0.95, shared, noisy(0.6)) for r in range(3)}
    cols.update({f"w{3 + r}": noisy(0.7) for r in range(4)})
    it = np.concatenate([np.arange(n)] * len(cols))
    wk = np.concatenate([[w] * n for w in cols])
    lb = np.concatenate(list(cols.values()))
    acc_plain = (DawidSkene(families=None).fit_predict(it, wk, lb).astype(int) == z).mean()
    model = default_aggregator().fit(it, wk, lb)
    acc_dep = (model.predict().astype(int) == z).mean()
    assert model.candidate_.dependent
    assert model.clusters_.groups() == [[0, 1, 2]]
    assert acc_dep > acc_plain + 0.02


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_evaluate_and_cli(tmp_path, rng):
    from typer.testing import CliRunner

    import streams.cli.evaluate  # noqa: F401
    from llmens_core.aggregation.evaluate import evaluate
    from streams.cli._app import app

    conf = make_confusions(rng, 5, 3)
    it, wk, lb, z = sample_votes(rng, conf, 150)
    _write(
        tmp_path / "a.csv",
        ["item", "worker", "label"],
        [(f"i{i}", f"w{w}", f"c{lab}") for i, w, lab in zip(it, wk, lb, strict=False)],
    )
    _write(tmp_path / "t.csv", ["item", "label"], [(f"i{i}", f"c{k}") for i, k in enumerate(z)])
    rows = evaluate(tmp_path / "a.csv", tmp_path / "t.csv", batch_size=64)
    assert [r["method"] for r in rows][0] == "default"
    assert {r["method"] for r in rows} == set(METHODS)
    for r in rows:
        assert r["items_scored"] == 150 and 0.7 < r["accuracy"] <= 1.0
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--answers",
            str(tmp_path / "a.csv"),
            "--truth",
            str(tmp_path / "t.csv"),
            "--method",
            "mv,online",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.strip().splitlines()]
    assert [x["method"] for x in lines] == ["mv", "online"]
    assert set(lines[0]) == {"method", "accuracy", "items_scored", "seconds", "accuracy_ties_split"}
    assert lines[0]["accuracy_ties_split"] == pytest.approx(_tie_split(
        [f"i{i}" for i in it], [f"c{lab}" for lab in lb], {f"i{i}": f"c{k}" for i, k in enumerate(z)}))
    assert set(lines[1]) == {"method", "accuracy", "items_scored", "seconds"}


def test_fit_votes(tmp_path):
    import orjson

    from llmens_core.aggregation.offline import fit_votes

    rng = np.random.default_rng(0)
    lines = []
    for p in range(60):
        truth = ["a", "b"][p % 2]
        for llm in ["m1|x", "m1|y", "m2|x"]:
            lab = truth if rng.random() < 0.85 else ("b" if truth == "a" else "a")
            lines.append(
                {"product_id": f"p{p}", "version": 1, "attribute": "gender", "llm": llm, "label": lab}
            )
        lines.append(
            {"product_id": f"p{p}", "version": 0, "attribute": "gender", "llm": "m1|x", "label": "zzz"}
        )
    lines.append({"product_id": "q", "version": 1, "attribute": "empty", "llm": "m1|x", "label": None})
    path = tmp_path / "votes.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    models = fit_votes(path)
    assert set(models) == {"gender", "empty"}
    g = models["gender"]
    assert sorted(g.classes_) == ["a", "b"]  # the old version's "zzz" was dropped
    assert g.version == 1 and g.n_items_ == 60
    assert g.predict({"m1|x": "a", "m1|y": "a", "m2|x": "a"}) == "a"
    assert models["empty"].workers_ == ["m1|x"]


def _tie_split(items, labels, truth) -> float:
    """:func:`majority_tie_split` of plain majority vote on these votes (one worker per vote: MV counts them all)."""
    return majority_tie_split(MajorityVote().fit(items, [f"w{k}" for k in range(len(items))], labels), truth)


def test_majority_tie_split_is_majority_vote_without_ties_and_fair_with_them():
    items = ["a", "a", "a", "b", "b", "c", "c"]
    labels = ["x", "x", "y", "y", "y", "x", "y"]  # a: x wins, b: y wins, c: a tie
    truth = {"a": "x", "b": "x", "c": "y"}
    assert _tie_split(items, labels, truth) == pytest.approx((1 + 0 + 0.5) / 3)
    mv = MajorityVote().fit(items, ["w1", "w2", "w3", "w1", "w2", "w1", "w2"], labels)
    assert dict(zip(mv.items_, mv.predict()))["c"] == "x"  # MajorityVote: ties to the first label in order
    assert _tie_split(items + ["d"], labels + [None], {**truth, "d": "x"}) == pytest.approx(2 / 4)
    renamed = {"x": "z", "y": "y"}
    assert _tie_split(items, [renamed[x] for x in labels], {i: renamed[t] for i, t in truth.items()}) \
        == pytest.approx(0.5)


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("pqrs")), min_size=1, max_size=40),
       st.permutations("pqrs"))
def test_majority_tie_split_does_not_depend_on_label_names(votes, perm):
    rename = dict(zip("pqrs", perm, strict=True))
    items = [str(i) for i, _ in votes]
    labels = [lab for _, lab in votes]
    truth = {str(i): "p" for i, _ in votes}
    before = _tie_split(items, labels, truth)
    after = _tie_split(items, [rename[x] for x in labels], {i: rename[t] for i, t in truth.items()})
    assert after == pytest.approx(before)
    assert 0.0 <= before <= 1.0


def test_sign_test():
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 1) == sign_test(1, 3) == pytest.approx(0.625)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(2, 0) == 0.5  # two items: a loss that chance explains half the time
