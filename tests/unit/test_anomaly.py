"""Anomaly detectors: coverage, slow creep (concentration), rate spikes and probing, graded with reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from westworld.anomaly import AgentEvent, AnomalyConfig, Severity, evaluate, prune

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
CFG = AnomalyConfig()


def ev(seq: int, agent: str, nodes: list[str], ago: timedelta, allowed: bool = True,
       caveat: str = "") -> AgentEvent:
    return AgentEvent(seq=seq, agent_id=agent, action_id=f"a{seq}", at=NOW - ago, allowed=allowed,
                      node_ids=nodes, caveat=caveat)


def kinds(findings: list, agent: str = "creeper") -> dict[str, Severity]:  # type: ignore[type-arg]
    return {f.kind: f.severity for f in findings if f.agent_id == agent}


def test_a_slow_creep_is_critical_though_every_step_is_small() -> None:
    # 2 nodes every 30 minutes for 20 hours: never more than 2% in any 10 minutes, 8% of 1000 overall
    events = [ev(i, "creeper", [f"n{2 * i}", f"n{2 * i + 1}"], timedelta(minutes=30 * i)) for i in range(40)]
    assert kinds(evaluate(events, NOW, 1000, CFG)) == {"concentration": Severity.WARNING}
    events += [ev(100 + i, "creeper", [f"m{4 * i + k}" for k in range(4)], timedelta(minutes=31 * i))
               for i in range(40)]
    findings = evaluate(events, NOW, 1000, CFG)
    assert kinds(findings)["concentration"] is Severity.CRITICAL
    assert "creeper touched 240 distinct nodes of 1000 live" in findings[0].reasons[0]


def test_a_burst_is_critical_coverage() -> None:
    events = [ev(i, "bulldozer", [f"n{j}" for j in range(i * 30, i * 30 + 30)], timedelta(minutes=1))
              for i in range(4)]
    assert kinds(evaluate(events, NOW, 1000, CFG), "bulldozer")["coverage"] is Severity.CRITICAL


def test_rate_spike_and_probing_are_graded_not_critical() -> None:
    events = [ev(i, "chatty", ["n1"], timedelta(seconds=i)) for i in range(120)]
    events += [ev(500 + i, "prober", [], timedelta(seconds=i), allowed=False, caveat="affects_nodes_le = 5")
               for i in range(25)]
    findings = evaluate(events, NOW, 1000, CFG)
    assert kinds(findings, "chatty") == {"rate": Severity.HIGH}
    prober = kinds(findings, "prober")
    assert prober == {"probing": Severity.HIGH}  # 25 attempts: below the rate spike, well above probing
    assert any("affects_nodes_le = 5" in r for f in findings if f.agent_id == "prober" for r in f.reasons)


def test_denied_actions_do_not_count_as_coverage_and_old_events_fall_out() -> None:
    events = [ev(i, "x", [f"n{i}"], timedelta(minutes=1), allowed=False) for i in range(100)]
    assert "coverage" not in kinds(evaluate(events, NOW, 100, CFG), "x")
    old = [ev(i, "x", [f"n{i}"], timedelta(hours=25)) for i in range(100)]
    assert prune(old, NOW, CFG) == [] and evaluate(old, NOW, 100, CFG) == []


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 600)), max_size=60), st.integers(1, 2000))
def test_findings_are_sorted_worst_first_and_monotonic_in_the_network_size(steps: list[tuple[int, int]],
                                                                           live: int) -> None:
    events = [ev(i, "a", [f"n{n}"], timedelta(minutes=m)) for i, (n, m) in enumerate(steps)]
    small = evaluate(events, NOW, live, CFG)
    ranks = [list(Severity).index(f.severity) for f in small]
    assert ranks == sorted(ranks, reverse=True)
    bigger = {(f.kind): f.severity for f in evaluate(events, NOW, live * 10, CFG)}
    for f in small:
        if f.kind in ("coverage", "concentration") and f.kind in bigger:
            assert list(Severity).index(bigger[f.kind]) <= list(Severity).index(f.severity)


def test_actions_endorsed_by_peers_do_not_count_as_the_agents_own_reach() -> None:
    wide = [AgentEvent(seq=1, agent_id="rollout", action_id="w1", at=NOW - timedelta(minutes=1), allowed=True,
                       node_ids=[f"n{i}" for i in range(300)], endorsed_by=["p1", "p2", "p3"])]
    assert evaluate(wide, NOW, 1000, CFG) == []
    unendorsed = [wide[0].model_copy(update={"endorsed_by": []})]
    assert kinds(evaluate(unendorsed, NOW, 1000, CFG), "rollout")["coverage"] is Severity.CRITICAL


def test_a_spike_is_measured_against_the_agents_own_baseline() -> None:
    steady = [ev(i, "a", ["n1"], timedelta(hours=1 + i)) for i in range(20)]  # ~1 action an hour
    burst = [ev(100 + i, "a", ["n1"], timedelta(seconds=10 * i)) for i in range(12)]
    findings = evaluate(steady + burst, NOW, 1000, CFG)
    spike = [f for f in findings if f.kind == "spike"]
    assert spike and spike[0].severity is Severity.WARNING and "its baseline" in spike[0].reasons[0]
    busy = [ev(i, "b", ["n1"], timedelta(minutes=10 + i)) for i in range(1400)]  # ~10 per 10 minutes, all day
    assert "spike" not in kinds(evaluate(busy + [ev(900 + i, "b", ["n1"], timedelta(minutes=1)) for i in range(12)],
                                         NOW, 1000, CFG), "b")
