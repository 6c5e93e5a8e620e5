"""Checks on ../shared/data (skipped when the repo's sibling shared/data is absent)."""

from __future__ import annotations

import pytest
from agg_synth import SHARED

from llmens_core.aggregation.evaluate import evaluate

LLM = SHARED / "llm_predictions" / "by_attribute"
CROWD = SHARED / "crowd"

pytestmark = pytest.mark.shared_data


@pytest.mark.skipif(not LLM.is_dir(), reason=f"shared LLM predictions not found at {LLM.resolve()}")
@pytest.mark.parametrize("attr", sorted(p.name for p in LLM.iterdir()) if LLM.is_dir() else [])
def test_default_at_least_majority_vote_on_llm_attributes(attr):
    rows = {
        r["method"]: r
        for r in evaluate(LLM / attr / "answers.csv", LLM / attr / "truth.csv", ["default", "mv"])
    }
    assert rows["default"]["accuracy"] >= rows["mv"]["accuracy"]


# crowd-kit 1.4.2 DawidSkene accuracies from ../shared/data/crowd/SOURCES.md
CK_DS = {"bluebird": 0.8889, "rte": 0.9275, "dog": 0.8426, "sentiment": 0.9600, "web": 0.8292}


@pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD.resolve()}")
@pytest.mark.parametrize("name", sorted(CK_DS))
def test_default_close_to_crowdkit_ds(name):
    acc = evaluate(CROWD / name / "answers.csv", CROWD / name / "truth.csv", ["default"])[0]["accuracy"]
    assert acc >= CK_DS[name] - 0.002


@pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD.resolve()}")
@pytest.mark.parametrize("name", sorted(CK_DS))
def test_one_online_pass_within_one_point_of_crowdkit_ds(name):
    acc = evaluate(CROWD / name / "answers.csv", CROWD / name / "truth.csv", ["online"])[0]["accuracy"]
    assert acc >= CK_DS[name] - 0.01


@pytest.mark.skipif(not LLM.is_dir(), reason=f"shared LLM predictions not found at {LLM.resolve()}")
@pytest.mark.parametrize("attr", sorted(p.name for p in LLM.iterdir()) if LLM.is_dir() else [])
def test_online_at_least_majority_vote_on_llm_attributes(attr):
    rows = {
        r["method"]: r
        for r in evaluate(LLM / attr / "answers.csv", LLM / attr / "truth.csv", ["online", "mv"])
    }
    assert rows["online"]["accuracy"] >= rows["mv"]["accuracy"]
