"""The safe document loader: hostile YAML/JSON is refused fast with its place; anything else parses as before."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from westworld.documents import (
    LIMITS,
    MAX_DURATION,
    Limits,
    duration_problem,
    load_document,
    out_of_range,
    parse_document,
)
from westworld.errors import INVALID_INPUT, InvalidInput

PARSERS = [pytest.param(False, id="libyaml"), pytest.param(True, id="pure-python")]


def refused(content: bytes | str, pure_python: bool = False, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidInput) as exc:
        parse_document(content, "in.yaml", limits, pure_python=pure_python)
    assert exc.value.type == INVALID_INPUT
    return exc.value.message


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['l0: &l0 "lol"']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def expanded_size(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + expanded_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(expanded_size(v) for v in value)
    return 1


@pytest.mark.parametrize("pure_python", PARSERS)
class TestRefusals:
    def test_not_utf8_names_the_byte(self, pure_python: bool) -> None:
        assert refused(b"name: caf\xe9\n", pure_python).startswith("in.yaml: not UTF-8 at byte 9")

    def test_billion_laughs_is_refused_at_once(self, pure_python: bool) -> None:
        started = time.perf_counter()
        message = refused(billion_laughs(), pure_python)
        assert "alias bomb" in message and message.startswith("in.yaml:")
        assert time.perf_counter() - started < 2

    def test_too_many_aliases(self, pure_python: bool) -> None:
        text = "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n"
        assert "more than 100 aliases" in refused(text, pure_python)

    def test_recursive_alias(self, pure_python: bool) -> None:
        assert "refers to the collection that contains it" in refused("a: &a [1, *a]\n", pure_python)
        assert "refers to the collection that contains it" in refused("a: &a {b: 1, <<: *a}\n", pure_python)

    @pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "{a: " * 5000 + "1" + "}" * 5000,
                                      "".join("  " * i + "a:\n" for i in range(100))])
    def test_deep_nesting(self, pure_python: bool, text: str) -> None:
        started = time.perf_counter()
        assert "nested deeper than 64 levels" in refused(text[: LIMITS.max_bytes], pure_python)
        assert time.perf_counter() - started < 2

    def test_deep_once_aliases_are_expanded(self, pure_python: bool) -> None:
        chain = ["a0: &a0 " + "[" * 40 + "]" * 40]
        chain += [f"a{i}: &a{i} " + "[" * 10 + f"*a{i - 1}" + "]" * 10 for i in range(1, 4)]
        assert "nested deeper than 64 levels once aliases are expanded" in refused("\n".join(chain), pure_python)

    def test_duplicate_key_names_both_lines(self, pure_python: bool) -> None:
        message = refused("quorum: 0.5\nwindow: 2h\nquorum: 0.01\n", pure_python)
        assert message == "in.yaml:3:1: duplicate key 'quorum' (first at line 1); a key may appear once in a mapping"
        assert "duplicate key 'b'" in refused('{"a": {"b": 1, "b": 2}}', pure_python)
        assert "duplicate key '0x1'" in refused("1: x\n0x1: y\n", pure_python)  # the same key once read

    def test_too_large(self, pure_python: bool) -> None:
        assert "larger than the 100 bytes an input document may have" in refused(b"a: " + b"x" * 100, pure_python,
                                                                           Limits(max_bytes=100))

    @pytest.mark.parametrize(("text", "expected"), [
        ("a: " + "9" * 5000, "in.yaml:1:4: malformed YAML/JSON: cannot read '9999"),
        ("a: 2026-13-45", "in.yaml:1:4: malformed YAML/JSON: cannot read '2026-13-45': month must be in 1..12"),
        ("a: !!python/object/apply:os.system [ls]", "could not determine a constructor"),
        ("a: \x00", "character #x0000 at position 3 is not allowed"),
        ("a: 1\n---\nb: 2\n", "in.yaml:2:1: malformed YAML/JSON: found another document"),
        ("a: [1, 2\nb: 3", "in.yaml:2:"),
        ("a: *nowhere", "found undefined alias 'nowhere'"),
        ("a: !!int ''", "in.yaml:1:4: malformed YAML/JSON: cannot read '': string index out of range"),
        ("a: !!bool maybe", "cannot read 'maybe'"),
        ("? !!int \n", "in.yaml:1:3: malformed YAML/JSON: cannot read ''"),  # a key that cannot be built
        ("? [1, 2]\n: x\n", "found unhashable key"),
    ])
    def test_malformed_or_unsafe_is_refused_with_its_place(self, pure_python: bool, text: str,
                                                           expected: str) -> None:
        assert expected in refused(text, pure_python)


@pytest.mark.parametrize("pure_python", PARSERS)
def test_ordinary_documents_load_as_pyyaml_reads_them(pure_python: bool) -> None:
    text = ("base: &b {a: 1, b: [x, y]}\nderived:\n  <<: *b\n  a: 2\nwhen: 2026-12-07\nn: 0x10\n"
            "json: {\"k\": [1, 2.5, null, true]}\n")
    doc = parse_document(text, "in.yaml", pure_python=pure_python)
    assert doc.data == yaml.safe_load(text)
    assert doc.data["derived"] == {"a": 2, "b": ["x", "y"]}  # a merge key may be overridden: not a duplicate
    assert doc.root is not None and doc.root.start_mark.line == 0
    assert parse_document("", "in.yaml").data is None
    assert load_document("\ufeffa: 1\n") == {"a": 1}  # a UTF-8 byte order mark is fine


def test_a_message_without_a_source_gives_the_line() -> None:
    with pytest.raises(InvalidInput, match=r"^line 2:1: duplicate key 'a'"):
        load_document("a: 1\na: 2\n", "")


class TestDurations:
    @pytest.mark.parametrize(("value", "expected"), [
        (float("inf"), "is not a finite duration (allowed: 0s to 3650d, i.e. 10 years)"),
        (float("nan"), "is not a finite duration"),
        (-1, "is negative (allowed: 0s to 3650d, i.e. 10 years)"),
        (10**400, "is longer than 10 years"),
        (MAX_DURATION + timedelta(seconds=1), "is longer than 10 years"),
    ], ids=["inf", "nan", "negative", "huge-int", "10-years-and-1s"])
    def test_refused_with_the_allowed_range(self, value: Any, expected: str) -> None:
        problem = duration_problem(value)
        assert problem is not None and problem.startswith(expected)

    def test_accepted(self) -> None:
        assert duration_problem(MAX_DURATION) is None and duration_problem(0) is None
        assert duration_problem(-5, allow_negative=True) is None

    def test_every_number_of_a_model_must_be_finite(self) -> None:
        class Threshold(BaseModel):
            max: float | None = None

        class Metric(BaseModel):
            thresholds: list[Threshold]

        found = out_of_range(Metric(thresholds=[Threshold(max=1.0), Threshold(max=float("nan"))]))
        assert found == ["thresholds[1].max: nan is not a finite number"]

    def test_every_duration_of_a_model_is_checked_by_path(self) -> None:
        class Step(BaseModel):
            wait: timedelta

        class Plan(BaseModel):
            window: timedelta
            steps: list[Step]
            extra: dict[str, timedelta]

        plan = Plan(window=timedelta(days=4000), steps=[Step(wait=timedelta(seconds=1)),
                                                        Step(wait=timedelta(seconds=-5))],
                    extra={"bake": timedelta(hours=1)})
        assert out_of_range(plan) == [
            "window: 345600000s is longer than 10 years (allowed: 0s to 3650d, i.e. 10 years)",
            "steps[1].wait: -5s is negative (allowed: 0s to 3650d, i.e. 10 years)"]


# -- fuzzing: only a document or InvalidInput comes back, quickly ---------------------------------------------

FRAGMENTS = ["a", "b", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ", ", "&x ", "*x", "&y ", "*y", "<<: ", "? ",
             "!!str ", "!!int ", "!!binary ", "!!python/name:os.system ", "'", '"', "\\", "#", "---\n", "...\n",
             "1e999", ".inf", ".nan", "9" * 30, "0x", "2026-13-45", "\t", "\x00", "\ufeff", "%YAML 1.1\n", "|\n",
             ">\n", "~", "true", "@", "`"]
hostile_text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


def only_document_or_refusal(content: bytes | str, pure_python: bool = False) -> None:
    started = time.perf_counter()
    message = ""
    try:
        doc = parse_document(content, "fuzz.yaml", pure_python=pure_python)
    except InvalidInput as err:
        message = err.message
    else:
        assert expanded_size(doc.data) <= 2 * LIMITS.max_nodes
    assert not message or message.startswith("fuzz.yaml"), message
    assert time.perf_counter() - started < 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_text, st.text(max_size=200), st.binary(max_size=200)), st.booleans())
def test_fuzz_random_and_hostile_documents(content: bytes | str, pure_python: bool) -> None:
    only_document_or_refusal(content, pure_python)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from(["[{}]", "{{k: {}}}", "{{<<: {}}}"]))
def test_fuzz_alias_bombs_of_any_shape(levels: int, width: int, shape: str) -> None:
    lines = ["l0: &l0 {x: lol}"]
    for i in range(1, levels + 1):
        refs = [f"*l{i - 1}"] * width
        body = shape.format(", ".join(refs)) if shape == "[{}]" else \
            "[" + ", ".join(shape.format(r) for r in refs) + "]"
        lines.append(f"l{i}: &l{i} {body}")
    only_document_or_refusal("\n".join(lines))
