"""The append and verify fast paths compute exactly what the strict definitions do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from westworld.audit import canonical_json, canonical_leaf, canonical_payload, entry_leaf, parse_json, timestamp

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)
TIMES = st.datetimes(timezones=st.just(UTC))


@given(st.text(max_size=64), st.text(max_size=64), st.dictionaries(st.text(), JSON, max_size=5), TIMES)
def test_the_leaf_without_parsing_equals_the_strict_leaf(kind: str, subject: str, payload: dict[str, Any],
                                                          at: datetime) -> None:
    try:
        text = canonical_payload(payload)
        strict = entry_leaf(kind, subject, text, at)
    except UnicodeEncodeError:  # a lone surrogate is refused by both alike
        return
    assert canonical_leaf(kind, subject, text, timestamp(at)) == strict


@given(st.dictionaries(st.integers() | st.text(), JSON, max_size=6))
def test_a_canonical_payload_is_its_own_canonical_form(payload: dict[Any, Any]) -> None:
    try:
        text = canonical_payload(payload)
    except (TypeError, ValueError):  # keys of mixed types, or two the same as text: refused
        return
    assert canonical_json(parse_json(text)) == text
