"""The append and verify fast paths compute exactly what the strict definitions do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from westworld import merkle
from westworld.audit import (
    StoredEntry,
    canonical_json,
    canonical_leaf,
    canonical_payload,
    entry_leaf,
    parse_json,
    timestamp,
)
from westworld.audit_trust import verify_log

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


def honest_rows(n: int) -> list[StoredEntry]:
    at = "2026-01-01T00:00:00.000000+00:00"
    frontier, rows = merkle.Frontier(), []
    for i in range(n):
        payload = canonical_json({"i": i})
        leaf = merkle.leaf_hash(canonical_leaf("k", f"s{i}", payload, at))
        frontier.append(leaf)
        rows.append(StoredEntry(seq=i, kind="k", subject=f"s{i}", payload_json=payload, leaf_hash=leaf.hex(),
                                root_after=frontier.root().hex(), created_at=at))
    return rows


def test_a_malformed_root_after_is_named_as_before_on_the_fast_path() -> None:
    rows = honest_rows(5)
    assert verify_log(rows).ok
    rows[1] = rows[1].model_copy(update={"root_after": "zz" * 32})
    report = verify_log(rows)
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "bad_row")] and "root_after" in report.problems[0].message
    gap = [rows[0], *rows[2:]]  # entry 1 gone: the chain stops, a malformed root_after later is still named
    gap[2] = gap[2].model_copy(update={"root_after": "not a hash"})
    assert [(p.seq, p.kind) for p in verify_log(gap).problems] == [(1, "entry_missing"), (3, "bad_row")]
