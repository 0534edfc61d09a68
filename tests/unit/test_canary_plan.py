"""Canary rules: deterministic nested step plans, and what an analysis of a step decides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from westworld.canary import Decision, Measurement, analyse_step, group_query, measure, plan_steps
from westworld.experiment import MetricSpec, Threshold

NODES = [f"mesh-n{i}" for i in range(20)]


def test_shares_of_twenty_nodes_merge_steps_that_add_nobody() -> None:
    plan = plan_steps(NODES, ["1%", "5%", "25%", "50%", "100%"], seed="r1")
    assert [(s.label, len(s.nodes)) for s in plan] == [("1%", 1), ("25%", 5), ("50%", 10), ("100%", 20)]
    assert plan[-1].nodes == plan[-1].nodes and set(plan[-1].nodes) == set(NODES)


def test_node_choice_is_deterministic_and_depends_on_the_seed() -> None:
    a = plan_steps(NODES, ["25%", "100%"], seed="r1")
    assert a == plan_steps(list(reversed(NODES)), ["25%", "100%"], seed="r1")
    assert a[0].nodes != plan_steps(NODES, ["25%", "100%"], seed="r2")[0].nodes


def test_counts_and_bad_targets() -> None:
    assert [len(s.added) for s in plan_steps(NODES, [2, 6, 20], seed="x")] == [2, 4, 14]
    with pytest.raises(ValueError, match="no nodes"):
        plan_steps([], ["100%"], seed="x")
    with pytest.raises(ValueError, match="twice"):
        plan_steps(["a", "a"], ["100%"], seed="x")


@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=60, unique=True),
       st.lists(st.floats(min_value=0.5, max_value=99.5), max_size=6), st.text(max_size=5))
def test_plans_nest_and_end_at_every_node(nodes: list[str], shares: list[float], seed: str) -> None:
    steps: list[int | str] = [*(f"{s:.1f}%" for s in sorted(shares)), "100%"]
    plan = plan_steps(nodes, steps, seed)
    assert set(plan[-1].nodes) == set(nodes)
    seen: list[str] = []
    for s in plan:
        assert s.nodes[: len(seen)] == seen and s.added and s.nodes == seen + s.added
        seen = s.nodes


ERRORS = MetricSpec(name="relay_errors", query="rate(e{selector}[5s])", threshold=Threshold(max=1.0), tolerance=0.5,
                    consecutive_successes=2)


def test_measure_threshold_and_comparison_with_stable_nodes() -> None:
    assert measure(ERRORS, 0.2, 0.2).ok is True
    breach = measure(ERRORS, 3.0, 0.1)
    assert breach.ok is False and "breaks its threshold (<= 1)" in breach.reason
    worse = measure(ERRORS, 0.5, 0.1)
    assert worse.ok is False and "+400.0%" in worse.reason
    assert measure(ERRORS, None, 0.1).ok is None


def row(ok: bool | None) -> list[Measurement]:
    return [Measurement(metric="relay_errors", canary=0, stable=0, ok=ok, reason="r" if ok is False else "")]


def test_step_analysis() -> None:
    assert analyse_step([ERRORS], [row(True)], bake_done=False).decision is Decision.CONTINUE
    rb = analyse_step([ERRORS], [row(True), row(False)], bake_done=False)
    assert rb.decision is Decision.ROLLBACK and "1 failed measurement(s); 0 tolerated" in rb.reasons[0]
    assert analyse_step([ERRORS], [row(True), row(True)], bake_done=True).decision is Decision.ADVANCE
    assert analyse_step([ERRORS], [row(True), row(None)], bake_done=True).decision is Decision.PAUSE


def test_group_query_matches_exactly_the_nodes() -> None:
    q = group_query("sum(rate(x{selector}[10s]))", {"sandbox": "mesh"}, "node", ["mesh-n1", "a.b"])
    assert q == 'sum(rate(x{sandbox="mesh",node=~"mesh-n1|a\\\\.b"}[10s]))'
