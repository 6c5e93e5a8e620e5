"""The student asked first: alone when its vote settles the posterior, the LLMs in stages otherwise, everyone on
exploration; what the DS model and the student learn from the outcome."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from llmens_core.adaptive import (
    AdaptivePolicy,
    ask_in_stages,
    ask_student_first,
    decided_alone,
    learnable,
    teaching,
)
from llmens_core.aggregation import default_online
from llmens_core.llm.config import EndpointConfig
from llmens_core.student import STUDENT

LLMS = ("a", "b", "c")
ACCURACY = {STUDENT: 0.995, "a": 0.9, "b": 0.85, "c": 0.8}
CLASSES = ["x", "y", "z"]


@pytest.fixture(autouse=True, scope="module")
def one_split():
    from llmens_core.aggregation import auto

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto, "MAX_REPEATS", 1)
        yield


def ep(name: str, price: float) -> EndpointConfig:
    return EndpointConfig(name=name, base_url="http://127.0.0.1:1/v1", model=name, price_in_per_1k=price,
                          price_out_per_1k=price)


def policy(**kw) -> AdaptivePolicy:
    return AdaptivePolicy([ep(n, 0.1 * (i + 1)) for i, n in enumerate(LLMS)], **{"exploration_share": 0.0, **kw})


@pytest.fixture(scope="module")
def model():
    """A model that has learnt a near-perfect student and three decent LLMs on 600 items."""
    rng = np.random.default_rng(0)
    m = default_online(CLASSES)
    it, wk, lb = [], [], []
    for i, z in enumerate(rng.integers(3, size=600)):
        for w, acc in ACCURACY.items():
            it.append(i)
            wk.append(w)
            lb.append(CLASSES[z if rng.random() < acc else (z + 1 + rng.integers(2)) % 3])
    m.partial_fit(it, wk, lb)
    return m


def answering(truth: str, calls: list):
    async def label(attrs, llms):
        calls.append((list(attrs), list(llms)))
        return [SimpleNamespace(attribute=a, llm=w, label=truth) for a in attrs for w in llms]
    return label


def test_the_student_decides_alone_when_its_vote_settles_the_posterior(model):
    calls = []
    votes, by, asked, why = asyncio.run(ask_student_first(
        policy(), answering("x", calls), "p1", ["q"], {"q": model}, {"q": {STUDENT: "x"}}))
    assert (votes, asked, why, calls) == ([], [], "student", [])
    assert by == {"q": {STUDENT: "x"}} and decided_alone(by["q"])


def test_without_a_student_vote_or_licence_the_llms_are_asked_as_today(model):
    calls, ref_calls = [], []
    p = policy()
    votes, by, asked, why = asyncio.run(ask_student_first(p, answering("y", calls), "p1", ["q"], {"q": model}, {}))
    ref = asyncio.run(ask_in_stages(p, answering("y", ref_calls), "p1", ["q"], {"q": model}))
    assert (by, asked, why, calls) == (ref[1], ref[2], ref[3], ref_calls) and asked
    calls = []
    _, by, asked, why = asyncio.run(ask_student_first(p, answering("x", calls), "p1", ["q"], {"q": model},
                                                      {"q": {STUDENT: "x"}}, may_decide_alone=False))
    assert asked and calls and why != "student" and by["q"][STUDENT] == "x"


def test_exploration_asks_everyone_with_the_student_in(model):
    calls = []
    _, by, asked, why = asyncio.run(ask_student_first(
        policy(exploration_share=1.0), answering("x", calls), "p1", ["q"], {"q": model}, {"q": {STUDENT: "x"}}))
    assert why == "explore" and asked == list(policy().order) and calls == [(["q"], asked)]
    assert by["q"] == {STUDENT: "x", "a": "x", "b": "x", "c": "x"}


def test_a_cold_model_does_not_trust_the_student_alone():
    calls = []
    _, _, asked, why = asyncio.run(ask_student_first(
        policy(), answering("x", calls), "p1", ["q"], {"q": default_online(CLASSES)}, {"q": {STUDENT: "x"}}))
    assert asked and why != "student"


def test_only_the_unsettled_attribute_goes_to_the_llms(model):
    calls = []
    _, by, asked, why = asyncio.run(ask_student_first(
        policy(), answering("z", calls), "p1", ["q", "r"], {"q": model, "r": model}, {"q": {STUDENT: "x"}}))
    assert all(attrs == ["r"] for attrs, _ in calls) and asked and why in ("confident", "exhausted")
    assert decided_alone(by["q"]) and not decided_alone(by["r"])
    assert learnable(by) == {"r": by["r"]}


def test_what_is_learnt(model):
    assert learnable({"q": {STUDENT: "x"}, "r": {STUDENT: "x", "a": None}, "s": {STUDENT: "x", "a": "y"}}) == {
        "s": {STUDENT: "x", "a": "y"}}
    assert teaching(model, {STUDENT: "x"}) is None
    assert teaching(default_online(), {"a": "x"}) is None
    label, weight = teaching(model, {STUDENT: "x", "a": "y", "b": "y"})
    assert label == "y" and weight == pytest.approx(float(model.posterior({"a": "y", "b": "y"}).max()))
    assert not decided_alone({STUDENT: "x", "a": "x"}) and not decided_alone({"a": "x"})


def _student_of_colours():
    """A student licensed on English titles whose colour word is the label (x = red, y = blue, z = green)."""
    from llmens_core.student import AttributeStudent, Students

    rng = np.random.default_rng(1)
    words = {"x": "red", "y": "blue", "z": "green"}
    s = AttributeStudent(CLASSES)
    for _ in range(10):
        labels = [CLASSES[k] for k in rng.integers(3, size=24)]
        s.learn([f"brand{rng.integers(20)} {words[lab]} shirt size {rng.integers(30, 50)}" for lab in labels],
                labels, [0.9] * 24)
    students = Students(lambda a: s, exploration_share=0.0)
    students["q"]
    return students


def test_no_text_or_foreign_text_never_lets_the_student_decide_alone_until_measured(model):
    students = _student_of_colours()

    def ask(text: str):
        calls = []
        g = students.guesses(text, ["q"])
        _, by, asked, why = asyncio.run(ask_student_first(
            policy(), answering("x", calls), "p1", ["q"], {"q": model}, students.votes(g)))
        return why, asked, by

    assert ask("brand3 red shirt size 40")[0] == "student"
    for text in ("", "红色 衬衫 棉质 男士", "rot hemd baumwolle red"):
        why, asked, by = ask(text)
        assert why != "student" and asked and STUDENT not in by["q"]
    for _ in range(200):  # its measured accuracy on unfamiliar text now licenses it there, and only there
        students["q"].record.add("unfamiliar", 0.8, True)
    assert ask("rot hemd baumwolle red")[0] == "student"
    assert ask("")[0] != "student"
