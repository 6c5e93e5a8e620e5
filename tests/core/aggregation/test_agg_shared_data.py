"""The done-when criteria of issue 11 on the shared development data (skipped when ../shared is absent)."""

from __future__ import annotations

import pytest
from agg_synth import SHARED

from llmens_core.aggregation.evaluate import evaluate

LLM = SHARED / "llm_predictions" / "by_attribute"
CROWD = SHARED / "crowd"
CROWD_SETS = ("bluebird", "dog", "rte", "sentiment", "web")

pytestmark = pytest.mark.shared_data


def _acc(d, methods):
    return {r["method"]: r for r in evaluate(d / "answers.csv", d / "truth.csv", methods)}


def _llm_attrs(min_gold: int):
    if not LLM.is_dir():
        return []
    return sorted(p.name for p in LLM.iterdir() if sum(1 for _ in open(p / "truth.csv")) - 1 >= min_gold)


@pytest.mark.skipif(not LLM.is_dir(), reason=f"shared LLM predictions not found at {LLM.resolve()}")
@pytest.mark.parametrize("attr", _llm_attrs(50))
def test_default_and_online_at_least_majority_vote_on_llm_attributes(attr):
    """Attributes with at least 50 gold items (the issue's bar; fewer cannot separate the methods)."""
    rows = _acc(LLM / attr, ["default", "online", "mv"])
    assert rows["default"]["accuracy"] >= rows["mv"]["accuracy"]
    assert rows["online"]["accuracy"] >= rows["mv"]["accuracy"]


@pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD.resolve()}")
@pytest.mark.parametrize("name", CROWD_SETS)
def test_default_within_half_a_point_of_the_better_of_mv_and_ds(name):
    rows = _acc(CROWD / name, ["default", "mv", "ds", "online"])
    best = max(rows["mv"]["accuracy"], rows["ds"]["accuracy"])
    assert rows["default"]["accuracy"] >= best - 0.005


@pytest.mark.skipif(not (CROWD / "web").is_dir(), reason=f"shared crowd data not found at {CROWD.resolve()}")
@pytest.mark.parametrize("seed", range(5))
def test_default_keeps_majority_vote_s_accuracy_on_a_small_sample_of_a_sparse_crowd(seed):
    """256 web items (five relevance grades). With ``shared`` raced on five grades, three of these five draws fell
    12 to 22 points below majority vote (seed 3: a grade with 15 % of the votes got a learned prior of 0.012,
    55.1 % against 77.3 %); see ``_bayes.candidates_for``."""
    import numpy as np

    from llmens_core.aggregation import MajorityVote, default_aggregator
    from llmens_core.aggregation.evaluate import read_answers, read_truth

    items, workers, labels = (np.asarray(x, dtype=object) for x in read_answers(CROWD / "web" / "answers.csv"))
    truth = read_truth(CROWD / "web" / "truth.csv")
    ids = np.unique(items.astype(str))
    keep = np.isin(items.astype(str), ids[np.random.default_rng(seed).permutation(len(ids))[:256]])

    def accuracy(model):
        pred = model.fit_predict(items[keep], workers[keep], labels[keep])
        return np.mean([truth[str(i)] == str(p) for i, p in zip(model.items_, pred, strict=True) if str(i) in truth])

    assert accuracy(default_aggregator()) >= accuracy(MajorityVote()) - 0.005


@pytest.mark.skipif(not (CROWD / "web").is_dir(), reason=f"shared crowd data not found at {CROWD.resolve()}")
@pytest.mark.parametrize("seed", [0, 1])
def test_one_online_pass_on_a_sparse_crowd_is_within_half_a_point_of_batch(seed):
    """web (177 workers, about six votes per item, five grades). Without the revisit window one shuffled pass
    ended 1.2 to 2.5 points below the batch fit: the statistics of its first batches kept what a young model,
    close to majority vote, made of them."""

    from llmens_core.aggregation import default_aggregator
    from llmens_core.aggregation.evaluate import _score, read_answers, read_truth, run_online

    items, workers, labels = read_answers(CROWD / "web" / "answers.csv")
    truth = read_truth(CROWD / "web" / "truth.csv")
    batch = default_aggregator()
    pred = batch.fit_predict(items, workers, labels)
    batch_acc = _score(batch.items_.tolist(), pred.tolist(), truth)[0]
    model, its, proba = run_online(items, workers, labels, seed=seed)
    online_acc = _score(its.tolist(), [model.classes_[k] for k in proba.argmax(1)], truth)[0]
    assert online_acc >= batch_acc - 0.005
