"""The experiment spec: the shipped examples load; a malformed spec gets every error with its path and line."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld.durations import parse_duration
from westworld.errors import InvalidInput
from westworld.experiment import format_duration, load_spec, parse_spec

EXAMPLES = Path(__file__).parents[2] / "deploy" / "experiments"

MALFORMED = """\
metadata:
  name: Bad_Name
spec:
  objective: try it
  duration: 30s
  interval: 40s
  baseline: {version: 1.3.0}
  workload: {version: 1.4.0, nodes: 2}
  chaos:
    - {kind: latency, start: 5s, duration: 5s, latency_ms: 10}
    - {kind: node_kill, start: 20s, duration: 20s, nodes: [3], latncy_ms: 4}
    - {kind: packet_loss, duration: 5 parsecs}
  metrics:
    - {name: p95, query: "up{selector}"}
    - {name: p95, query: "up"}
  rollout:
    target: {mesh_nodes: 10}
    steps: ["5%", 1, "50%", 7]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_spec(text)
    return [line.strip() for line in exc.value.message.splitlines()[1:]]


@pytest.mark.parametrize("name", ["good.yaml", "faulty.yaml"])
def test_shipped_examples_load(name: str) -> None:
    spec = load_spec((EXAMPLES / name).read_text())
    assert spec.spec.duration == timedelta(seconds=30)
    assert spec.spec.chaos[0].start == timedelta(seconds=6)
    assert spec.spec.rollout is not None and spec.spec.rollout.target.mesh_nodes == 20
    assert len(spec.spec_hash()) == 64


def test_a_malformed_spec_gets_every_error_with_its_path_and_line() -> None:
    found = problems(MALFORMED)
    expected = [
        "metadata.name (line 2): 'Bad_Name' is not a DNS label",
        "spec.chaos[1].latncy_ms (line 11): unknown field",
        "spec.chaos[2].duration (line 12): '5 parsecs' is not a duration",
        "spec.metrics[1].query (line 15): must contain {selector}",
        "spec.interval (line 6): must not exceed spec.duration (30s)",
        "spec.chaos[1].duration (line 11): must end before spec.duration (30s); it ends at 40s",
        "spec.chaos[1].nodes[0] (line 11): node index 3 does not exist (spec.workload.nodes is 2: 0..1)",
        "spec.chaos[2].loss_pct (line 12): a packet_loss fault needs loss_pct > 0",
        "spec.metrics[1].name (line 15): duplicate metric name 'p95' (also spec.metrics[0])",
        "spec.rollout.steps[3] (line 18): the last step must reach every node ('100%' or 10)",
    ]
    for e in expected:
        assert any(line.startswith(e) for line in found), f"missing {e!r} in:\n" + "\n".join(found)
    assert len(found) == len(expected), "\n".join(found)


def test_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(InvalidInput, match=r"^line 4:8: malformed YAML/JSON: did not find expected .,. or .\]. "
                                           r"\(while parsing a flow sequence at line 3\)"):
        load_spec("metadata:\n  name: x\nspec: [1, 2\n  other: 3\n")


def test_missing_sections_are_named() -> None:
    found = problems("metadata: {name: ok}\nspec: {objective: o}\n")
    assert {"spec.duration (line 2): required", "spec.baseline (line 2): required",
            "spec.workload (line 2): required", "spec.metrics (line 2): required"} <= set(found)


def test_rollout_rules() -> None:
    base = (EXAMPLES / "good.yaml").read_text()
    text = base.replace('steps: ["1%", "5%", "25%", "50%", "100%"]', 'steps: ["50%", "25%", "60%"]')
    text = text.replace("analysis_interval: 1m", "analysis_interval: 20m")
    found = problems(text)
    assert any(p.startswith("spec.rollout.steps[1]") and "steps must grow" in p for p in found)
    assert any(p.startswith("spec.rollout.steps[2]") and "last step must reach every node" in p for p in found)
    assert any(p.startswith("spec.rollout.analysis_interval") and "bake_time" in p for p in found)


def test_fault_kinds_need_their_parameters() -> None:
    spec = yaml.safe_load((EXAMPLES / "good.yaml").read_text())
    spec["spec"]["chaos"] = [{"kind": "latency", "duration": "5s"}, {"kind": "partition", "duration": "5s"},
                             {"kind": "packet_loss", "duration": "5s", "start": "-1s"}]
    with pytest.raises(InvalidInput) as exc:
        parse_spec(spec)
    msg = exc.value.message
    assert "spec.chaos[0].latency_ms: a latency fault needs latency_ms > 0" in msg
    assert "spec.chaos[1].nodes: a partition fault needs the node indexes it affects" in msg
    assert "spec.chaos[2].loss_pct: a packet_loss fault needs loss_pct > 0" in msg
    assert "spec.chaos[2].start: '-1s' is not a duration" in msg


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800),
                                               ("5m", 300), (12, 12)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@given(st.integers(min_value=1, max_value=10**6))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["metadata", "spec", "kind", "apiVersion", "x"]), json_values))
def test_any_input_is_either_a_spec_or_invalid_input(data: dict[str, object]) -> None:
    message = ""
    try:
        parse_spec(data)
    except InvalidInput as err:
        message = err.message
    assert not message or "problem" in message or "(top)" in message


def _with_rollout(**fields: object) -> dict[str, object]:
    data = yaml.safe_load((EXAMPLES / "good.yaml").read_text())
    data["spec"]["rollout"].update(fields)
    return data  # type: ignore[no-any-return]


def test_rollout_agent_and_peer_policy() -> None:
    spec = parse_spec(_with_rollout(agent="cradle-bot", peer_policy={"threshold": 2, "wide_nodes": 5, "wait": "2m"}))
    plan = spec.spec.rollout
    assert plan is not None and plan.agent == "cradle-bot" and plan.peer_policy is not None
    assert (plan.peer_policy.threshold, plan.peer_policy.wide_nodes) == (2, 5)
    assert (plan.peer_policy.wide_pct, plan.peer_policy.wait) == (None, timedelta(minutes=2))  # left out: the policy's
    dumped = spec.model_dump(mode="json", by_alias=True)["spec"]["rollout"]
    assert dumped["agent"] == "cradle-bot" and dumped["peer_policy"]["wait"] == "PT2M"


def test_a_spec_without_an_agent_dumps_and_hashes_as_before() -> None:
    spec = load_spec((EXAMPLES / "good.yaml").read_text())
    assert not {"agent", "peer_policy"} & set(spec.model_dump(mode="json", by_alias=True)["spec"]["rollout"])
    with_agent = parse_spec(_with_rollout(agent="cradle-bot"))
    assert with_agent.spec_hash() != spec.spec_hash()  # the agent is part of what the vote approves


@pytest.mark.parametrize(("fields", "expected"), [
    ({"agent": "a", "peer_policy": {"threshold": 0}},
     "spec.rollout.peer_policy.threshold: Input should be greater than or equal to 1"),
    ({"agent": "a", "peer_policy": {"threshold": 65}},
     "spec.rollout.peer_policy.threshold: Input should be less than or equal to 64"),
    ({"agent": "a", "peer_policy": {"wide_nodes": -1}},
     "spec.rollout.peer_policy.wide_nodes: Input should be greater than or equal to 0"),
    ({"agent": "a", "peer_policy": {"wide_pct": 101}},
     "spec.rollout.peer_policy.wide_pct: Input should be less than or equal to 100"),
    ({"agent": "a", "peer_policy": {"wait": "0s"}}, "spec.rollout.peer_policy.wait: must be positive"),
    ({"agent": "a", "peer_policy": {"wait": "soon"}}, "spec.rollout.peer_policy.wait: 'soon' is not a duration"),
    ({"agent": "a", "peer_policy": {"peers": ["p1"]}}, "spec.rollout.peer_policy.peers: unknown field"),
    ({"peer_policy": {"threshold": 2}},
     "spec.rollout.peer_policy: applies to steps run as an agent: set spec.rollout.agent"),
    ({"agent": "bad agent!"}, "spec.rollout.agent: 'bad agent!' is not an agent id"),
    ({"agent": "a", "capability_token": "secret"}, "spec.rollout.capability_token: unknown field"),
])
def test_rollout_agent_problems_name_their_path(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_spec(_with_rollout(**fields))
    lines = [line.strip() for line in exc.value.message.splitlines()[1:]]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_peer_policy_problems_carry_their_line() -> None:
    text = (EXAMPLES / "good.yaml").read_text() + "    peer_policy:\n      threshold: 0\n"
    found = problems(text)
    assert found[0].startswith("spec.rollout.peer_policy.threshold (line 70): Input should be greater than or equal")
    assert found[1] == ("spec.rollout.peer_policy (line 70): applies to steps run as an agent: set "
                        "spec.rollout.agent")


GOOD = (EXAMPLES / "good.yaml").read_text()


@pytest.mark.parametrize(("value", "expected"), [
    ("99999999999999", "99999999999999 is longer than 10 years (allowed: 0s to 3650d, i.e. 10 years)"),
    ("99999999999d", "'99999999999d' is longer than 10 years (allowed: 0s to 3650d, i.e. 10 years)"),
    ("P99999D", "'P99999D' is longer than 10 years"),
    ("1" + "0" * 400, "1000000000000000000000000000000000000000... (401 characters) is longer than 10 years"),
    (".inf", "inf is not a finite duration (allowed: 0s to 3650d, i.e. 10 years)"),
    ("-.inf", "-inf is not a finite duration"),
    (".nan", "nan is not a finite duration"),
    ("-5", "-5 is negative (allowed: 0s to 3650d, i.e. 10 years)"),
    ("-PT5S", "'-PT5S' is negative"),
    ("true", "True is not a duration"),
    ("Pfoo", "'Pfoo' is not a duration"),
], ids=["huge-seconds", "huge-days", "huge-iso", "400-digits", "inf", "minus-inf", "nan", "negative",
        "negative-iso", "bool", "bad-iso"])
def test_durations_are_bounded_and_named_by_path(value: str, expected: str) -> None:
    found = problems(GOOD.replace("duration: 30s", f"duration: {value}", 1))
    assert found[0].startswith(f"spec.duration (line 8): {expected}"), found


@pytest.mark.parametrize(("field", "path"), [("interval: 3s", "spec.interval (line 9)"),
                                             ("bake_time: 10m", "spec.rollout.bake_time (line 62)")])
def test_other_durations_are_bounded_too(field: str, path: str) -> None:
    text = GOOD.replace(field, f"{field.partition(':')[0]}: 99999999999d", 1)
    assert text != GOOD
    found = problems(text)
    assert f"{path}: '99999999999d' is longer than 10 years (allowed: 0s to 3650d, i.e. 10 years)" in found, found


def test_ten_years_is_the_longest_duration() -> None:
    spec = load_spec(GOOD.replace("duration: 30s", "duration: 3650d", 1))
    assert spec.spec.duration == timedelta(days=3650)


SPEC_FRAGMENTS = ["metadata:\n", "  name: x\n", "spec:\n", "  duration: ", "  chaos: ", "&a ", "*a", "[", "]",
                  "{", "}", ", ", "99999999999999", ".inf", ".nan", "-5", "1e999", "30s", "P9999999D", "\n",
                  "  metrics: ", "  objective: o\n", "duration: 1s\n", "<<: *a\n"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(SPEC_FRAGMENTS), max_size=40).map("".join), st.binary(max_size=120),
                 st.text(max_size=120)))
def test_any_text_is_either_a_spec_or_invalid_input(text: str | bytes) -> None:
    with contextlib.suppress(InvalidInput):  # anything else (OverflowError, RecursionError, ...) fails the test
        load_spec(text, "fuzz.yaml")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_numbers_must_be_finite(value: str) -> None:
    """A threshold of NaN never trips (every comparison is false): refused, with its path."""
    found = problems(GOOD.replace("threshold: {max: 0.5}", f"threshold: {{max: {value}}}", 1))
    assert any(p.startswith("spec.metrics[0].threshold.max (line 35): Input should be a finite number") for p in found)
