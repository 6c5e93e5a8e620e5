"""The student: learns a text task online, votes only where its prequential record licenses it, keeps unfamiliar
and empty texts apart, loses its licence when it starts to disagree, and survives serialisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.student import (
    FORMAT,
    STUDENT,
    TAUS,
    AttributeStudent,
    PrequentialRecord,
    Students,
    hash_share,
    product_text,
    wilson_lower,
)

COLOURS = ["red", "blue", "green"]
NOUNS = ["shirt", "dress", "sneaker", "jacket", "mug", "scarf", "cap", "sock"]


def catalogue(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Titles whose colour word is the label (with some noise words), a task a text student learns in ~100."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        c = COLOURS[rng.integers(3)]
        texts.append(f"brand{rng.integers(20)} {c} {NOUNS[rng.integers(len(NOUNS))]} size {rng.integers(30, 50)}")
        labels.append(c)
    return texts, labels


def trained(n: int = 240, **kw) -> AttributeStudent:
    s = AttributeStudent([*COLOURS, "none"], **kw)
    texts, labels = catalogue(n)
    for i in range(0, n, 24):
        s.learn(texts[i:i + 24], labels[i:i + 24], [0.9] * len(texts[i:i + 24]))
    return s


def test_a_cold_student_abstains_and_a_trained_one_votes_right():
    cold = AttributeStudent([*COLOURS, "none"])
    g = cold.guess("acme red shirt")
    assert (g.label, g.vote) == (None, None)
    s = trained()
    assert s.record.threshold("text") is not None
    texts, labels = catalogue(60, seed=1)
    guesses = s.guess_many(texts)
    assert sum(g.vote == lab for g, lab in zip(guesses, labels)) >= 55
    assert all(g.vote in (None, g.label) for g in guesses)


def test_empty_and_foreign_text_never_vote_until_measured_apart():
    s = trained()
    assert s.guess("").bucket == "empty" and s.guess("").vote is None
    assert s.guess("红色 衬衫 棉质 男士").vote is None
    foreign = s.guess("rot hemd baumwolle red")  # one known word: a confident guess, still no vote
    assert foreign.bucket == "unfamiliar" and foreign.label == "red" and foreign.proba > 0.8
    assert foreign.vote is None
    for _ in range(200):  # the unfamiliar bucket is licensed only by its own record
        s.record.add("unfamiliar", 0.8, True)
    assert s.record.threshold("unfamiliar") is not None
    assert s.guess("rot hemd baumwolle red").vote == "red"


def test_falling_agreement_revokes_the_licence():
    s = trained(window=100)
    assert s.record.threshold("text") is not None
    texts, labels = catalogue(120, seed=2)
    flipped = [COLOURS[(COLOURS.index(lab) + 1) % 3] for lab in labels]  # drift: the panel now says otherwise
    s.learn(texts, flipped, [1.0] * len(texts))
    assert s.record.threshold("text") is None
    assert all(g.vote is None for g in s.guess_many(texts[:20]))


def test_learn_weights_skips_unknown_labels_and_checks_lengths():
    s = AttributeStudent(["a", "b"])
    assert s.learn(["x y", "z w", "q"], ["a", "zzz", None]) == 1
    assert s.learn(["x y"], ["b"], [0.0]) == 0
    with pytest.raises(ValueError):
        s.learn(["x"], ["a", "b"])
    with pytest.raises(ValueError):
        AttributeStudent(["a"])


def test_gold_is_learnt_at_full_weight_and_scored():
    s = AttributeStudent(["a", "b"])
    assert s.learn_gold(["alpha thing", "beta thing"], ["a", "b"]) == 2
    assert s.record.n_scored["unfamiliar"] == 2 and s.n_learnt == 2


def test_serialisation_round_trip_predicts_and_learns_on_identically():
    s = trained()
    b = s.to_bytes()
    assert b.startswith(FORMAT)
    r = AttributeStudent.from_bytes(b)
    texts, labels = catalogue(30, seed=3)
    assert r.guess_many(texts) == s.guess_many(texts)
    assert r.summary() == s.summary()
    s.learn(texts, labels)
    r.learn(texts, labels)
    assert np.array_equal(r._clf.coef_, s._clf.coef_)
    assert r.guess_many(texts) == s.guess_many(texts)
    cold = AttributeStudent.from_bytes(AttributeStudent(["a", "b"]).to_bytes())
    assert not cold.fitted and cold.guess("x").label is None
    with pytest.raises(ValueError, match="header"):
        AttributeStudent.from_bytes(b"llmens-student/0\n" + b[len(FORMAT):])


def test_peek_version_reads_the_header_only_and_a_frozen_copy_predicts_the_same():
    s = trained()
    b = s.to_bytes()
    assert AttributeStudent.peek_version(b) == s.version > 0
    frozen = AttributeStudent.from_bytes(b).freeze()
    assert frozen._clf.coef_.flags.f_contiguous
    texts, _ = catalogue(30, seed=4)
    assert frozen.guess_many(texts) == s.guess_many(texts)
    with pytest.raises(ValueError, match="header"):
        AttributeStudent.peek_version(b"not a student")


def test_students_create_on_first_use_explore_by_hash_and_leave_abstentions_out():
    made = []
    st_ = Students(lambda a: made.append(a) or AttributeStudent(["x", "y"]), exploration_share=0.25)
    st_["colour"]
    st_["colour"]
    assert made == ["colour"]
    ids = [f"p{i}" for i in range(4000)]
    share = np.mean([st_.explore(i) for i in ids])
    assert 0.22 < share < 0.28
    assert [st_.explore(i) for i in ids[:50]] == [Students(lambda a: None, exploration_share=0.25).explore(i)
                                                  for i in ids[:50]]
    s = trained()
    g = {"c": s.guess("brand1 red cap size 40"), "d": AttributeStudent(["x", "y"]).guess("red")}
    assert Students.votes(g) == {"c": {STUDENT: "red"}}


def test_product_text_joins_what_there_is():
    assert product_text("T", None, "C") == "T \n C"
    assert product_text(None, "  ", None) == ""
    assert len(product_text("t", "d" * 5000)) < 1100


@given(st.integers(0, 500), st.integers(0, 500))
def test_wilson_lower_is_a_lower_bound_in_the_unit_interval(k, extra):
    n = k + extra
    lo = wilson_lower(k, n)
    assert 0.0 <= lo <= (k / n if n else 0.0) + 1e-12
    if n:
        assert wilson_lower(k + 1, n + 1) >= lo - 1e-12  # one more success never lowers it


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), max_size=120), st.floats(0.5, 1.0))
def test_threshold_is_the_smallest_licensed_tau(rows, target):
    rec = PrequentialRecord(window=100, min_scored=5, target=target)
    rec.extend(("text", p, a) for p, a in rows)
    kept = rows[-100:]

    def licensed(tau):
        sel = [a for p, a in kept if p >= tau]
        return len(sel) >= 5 and wilson_lower(sum(sel), len(sel)) >= target

    tau = rec.threshold("text")
    assert tau == next((t for t in TAUS if licensed(t)), None)
    assert PrequentialRecord.from_dict(rec.to_dict()).threshold("text") == tau


def test_hash_share_bounds():
    assert not hash_share("p", 0.0, "s") and hash_share("p", 1.0, "s")
