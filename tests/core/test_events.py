"""Event contracts: round trips, and rejections that name the bad field."""

from __future__ import annotations

import string

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmens_core.events import AttributeDecision, DeadLetter, EventError, LabelVote, ProductUpdate

text = st.text(alphabet=string.printable + "éü中", min_size=1, max_size=40)
labels = st.one_of(st.none(), st.sampled_from(["male", "female", "none", "unisex"]))


@st.composite
def products(draw):
    d = {"product_id": draw(text), "version": draw(st.integers(0, 2**40)), "title": draw(text),
         "description": draw(st.one_of(st.none(), text)), "category": draw(st.one_of(st.none(), text)),
         "attributes": draw(st.one_of(st.none(), st.lists(text, max_size=4))),
         "updated_at": draw(st.one_of(st.none(), st.floats(0, 2e9)))}
    extra = draw(st.dictionaries(st.sampled_from(["source", "brand", "sku"]), text, max_size=2))
    return {**d, **extra}


@given(products())
@settings(max_examples=200, deadline=None)
def test_product_update_round_trip_keeps_extra_fields(raw):
    p = ProductUpdate.from_bytes(orjson.dumps(raw))
    again = ProductUpdate.from_bytes(p.to_bytes())
    assert again == p
    assert again.extra_fields() == {k: v for k, v in raw.items() if k in ("source", "brand", "sku")}


@given(st.builds(LabelVote, product_id=text, version=st.integers(0, 10**9), attribute=text, llm=text,
                 label=labels, raw=st.one_of(st.none(), text), latency_s=st.floats(0, 100),
                 cost_usd=st.floats(0, 1), error=st.one_of(st.none(), text)))
@settings(max_examples=100, deadline=None)
def test_label_vote_round_trip(vote):
    assert LabelVote.from_bytes(vote.to_bytes()) == vote


@given(value=labels, conf=st.floats(0, 1), revision=st.integers(0, 5),
       votes=st.dictionaries(text, labels, max_size=5))
@settings(max_examples=100, deadline=None)
def test_attribute_decision_round_trip(value, conf, revision, votes):
    d = AttributeDecision(product_id="p1", version=3, attribute="gender", value=value, confidence=conf,
                          posterior={"male": conf}, votes=votes, model_version=7, revision=revision)
    assert AttributeDecision.from_bytes(d.to_bytes()) == d
    assert d.key == "p1/gender"


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_dead_letter_keeps_original_bytes(original, key):
    dl = DeadLetter.wrap(original, "invalid JSON", topic="t", partition=2, offset=99, key=key)
    back = DeadLetter.from_bytes(dl.to_bytes())
    assert back.original == original and back.partition == 2 and back.offset == 99


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"\xff\xfe", "invalid JSON"),
    (b"{", "invalid JSON"),
    (b"[1]", "must be a JSON object"),
    (b'{"version": 1, "title": "t"}', "product_id"),
    (b'{"product_id": "p", "title": "t"}', "version"),
    (b'{"product_id": "p", "version": "7", "title": "t"}', "version: Value error, must be an integer"),
    (b'{"product_id": "p", "version": true, "title": "t"}', "version"),
    (b'{"product_id": "p", "version": -1, "title": "t"}', "version"),
    (b'{"product_id": "p", "version": 1, "title": ""}', "title"),
    (b'{"product_id": "p", "version": 1, "title": "t", "attributes": "gender"}', "attributes"),
])
def test_rejections_name_the_field(raw, fragment):
    with pytest.raises(EventError) as err:
        ProductUpdate.from_bytes(raw)
    assert fragment in str(err.value)


def test_oversize_event_is_rejected_before_parsing():
    with pytest.raises(EventError, match="too large: 101 bytes > limit 100"):
        ProductUpdate.from_bytes(b"x" * 101, max_bytes=100)


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_arbitrary_bytes_never_raise_anything_but_event_error(raw):
    try:
        ProductUpdate.from_bytes(raw)
    except EventError:
        pass
