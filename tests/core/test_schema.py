"""Attribute schema: closed label sets, synonyms, category defaults."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmens_core.events import NOT_PRESENT
from llmens_core.schema import AttributeSchema

SCHEMA = AttributeSchema.load()


def test_shipped_schema_has_the_normalised_attributes_with_none_class():
    for name in ("gender", "age_group", "color_family", "material", "sport_type", "roast_type", "reusability"):
        assert name in SCHEMA
        assert SCHEMA[name].classes[-1] == NOT_PRESENT


@pytest.mark.parametrize(("attr", "answer", "label"), [
    ("gender", "Men's", "male"), ("gender", "  WOMEN ", "female"), ("color_family", "Navy", "blue"),
    ("material", "Stainless Steel", "metal"), ("roast_type", "Medium_Dark", "medium_dark"),
    ("gender", "n/a", NOT_PRESENT), ("gender", None, NOT_PRESENT), ("gender", "robot", None),
    ("gender", 42, None),
])
def test_answers_map_into_the_label_set_or_abstain(attr, answer, label):
    assert SCHEMA[attr].to_label(answer) == label


@given(st.one_of(st.text(max_size=30), st.none(), st.integers()))
def test_to_label_never_leaves_the_classes(answer):
    for attr in ("gender", "material"):
        out = SCHEMA[attr].to_label(answer)
        assert out is None or out in SCHEMA[attr].classes


def test_category_defaults_and_unknown_attributes():
    assert "roast_type" in SCHEMA.for_category("Coffee")
    known, unknown = SCHEMA.requested(["gender", "bogus", "gender"], None)
    assert known == ["gender"] and unknown == ["bogus"]
    assert SCHEMA.requested(None, "Coffee")[0] == SCHEMA.for_category("Coffee")
    assert SCHEMA.requested(None, None) == ([], [])


def test_bad_schema_files_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        AttributeSchema.from_dict({"attributes": {"a": {"labels": ["x", "none"]}}})
    with pytest.raises(ValueError, match="unknown labels"):
        AttributeSchema.from_dict({"attributes": {"a": {"labels": ["x"], "synonyms": {"y": ["z"]}}}})
    with pytest.raises(ValueError, match="empty label set"):
        AttributeSchema.from_dict({"attributes": {"a": {"labels": []}}})
