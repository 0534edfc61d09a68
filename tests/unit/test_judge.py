"""The judge: Mann-Whitney U against hand-computed values and its invariants; thresholds; aggregation."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld.evidence import ChaosEvent, check_faults, fault_problems, fault_slack
from westworld.experiment import Direction, FaultSpec, JudgeConfig, MetricSpec, Threshold
from westworld.judge import (
    MetricSamples,
    MetricStatus,
    Verdict,
    invalid_run,
    judge,
    mann_whitney_u,
    run_outcome,
)
from westworld.sandbox import FaultKind

samples = st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=40)


def metric(**kw: object) -> MetricSpec:
    return MetricSpec.model_validate({"name": "m", "query": "x{selector}", **kw})


def test_mann_whitney_matches_the_hand_computation() -> None:
    # Treatment 19,22,16,29,24 vs baseline 20,11,17,12: pooled order 11 12 16 17 19 20 22 24 29, treatment
    # ranks 3,5,7,8,9 -> R=32, U=32-15=17; mu=10, sigma^2 = 5*4*10/12; z = (17-10-0.5)/sqrt(16.667) = 1.5922;
    # two-sided p = 0.1113 (scipy.stats.mannwhitneyu(method="asymptotic") gives the same; exact is 0.1111).
    r = mann_whitney_u([20, 11, 17, 12], [19, 22, 16, 29, 24])
    assert r.u == 17
    assert r.z == pytest.approx(6.5 / math.sqrt(50 / 3))
    assert r.p_value == pytest.approx(math.erfc(r.z / math.sqrt(2)))
    assert r.p_value == pytest.approx(0.1113, abs=5e-4)


def test_tie_correction_shrinks_the_variance() -> None:
    # Ties: pooled 1,1,2,2,2,3 -> tie groups of 2 and 3: sum(t^3-t) = 6 + 24 = 30; n=6.
    r = mann_whitney_u([1, 2, 2], [1, 2, 3])
    var = 3 * 3 / 12 * (7 - 30 / (6 * 5))
    assert r.u == pytest.approx(5.5)
    assert r.z == pytest.approx((5.5 - 4.5 - 0.5) / math.sqrt(var))


def test_identical_samples_have_no_difference() -> None:
    assert mann_whitney_u([3.0] * 5, [3.0] * 7).p_value == 1.0


@given(samples, samples)
def test_u_statistics_sum_to_n1_n2_and_p_is_symmetric(a: list[float], b: list[float]) -> None:
    ab, ba = mann_whitney_u(a, b), mann_whitney_u(b, a)
    assert ab.u + ba.u == pytest.approx(len(a) * len(b))
    assert ab.p_value == pytest.approx(ba.p_value)
    assert 0.0 <= ab.p_value <= 1.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=8, max_size=30))
def test_a_clear_shift_is_significant(base: list[float]) -> None:
    shifted = [v + 1000 for v in base]
    assert mann_whitney_u(base, shifted).p_value < 0.01


def test_threshold_failure_limit_and_consecutive_successes() -> None:
    assert run_outcome([True, False, True], failure_limit=0, consecutive=1)[0] is MetricStatus.FAIL
    assert run_outcome([True, False, True], failure_limit=1, consecutive=1)[0] is MetricStatus.PASS
    assert run_outcome([True, False, True], failure_limit=1, consecutive=2)[0] is MetricStatus.INCONCLUSIVE
    assert run_outcome([None, None], failure_limit=0, consecutive=1)[0] is MetricStatus.NODATA
    assert run_outcome([True, None, True], failure_limit=0, consecutive=2)[0] is MetricStatus.INCONCLUSIVE


CONFIG = JudgeConfig()
STEADY = [0.010, 0.011, 0.012, 0.010, 0.011, 0.013, 0.012, 0.011]


def test_good_treatment_passes_with_reasons() -> None:
    r = judge([metric(threshold=Threshold(max=0.05))], {"m": MetricSamples(baseline=STEADY, treatment=STEADY)}, CONFIG)
    assert r.verdict is Verdict.PASS and r.score == 100
    assert any("pass" in reason for reason in r.reasons)


def test_slower_treatment_fails_with_test_and_change() -> None:
    slow = [v + 0.04 for v in STEADY]
    r = judge([metric(critical=True)], {"m": MetricSamples(baseline=STEADY, treatment=slow)}, CONFIG)
    assert r.verdict is Verdict.FAIL and r.score == 0
    m = r.metrics[0]
    assert m.status is MetricStatus.FAIL and m.test is not None and m.test.p_value < 0.05
    assert m.relative_change is not None and m.relative_change > 3
    assert "Mann-Whitney p=" in m.reasons[0] and "lower is better" in m.reasons[0]


def test_improvement_is_not_a_regression() -> None:
    faster = [v / 2 for v in STEADY]
    r = judge([metric()], {"m": MetricSamples(baseline=STEADY, treatment=faster)}, CONFIG)
    assert r.verdict is Verdict.PASS
    r = judge([metric(direction=Direction.EITHER)], {"m": MetricSamples(baseline=STEADY, treatment=faster)}, CONFIG)
    assert r.verdict is Verdict.FAIL


def test_weighted_score_gives_marginal_and_critical_vetoes() -> None:
    good = MetricSamples(baseline=STEADY, treatment=STEADY)
    bad = MetricSamples(baseline=STEADY, treatment=[v * 3 for v in STEADY])
    metrics = [metric(name="a", weight=4), metric(name="b", weight=1)]
    cfg = JudgeConfig(pass_score=95, marginal_score=75)
    r = judge(metrics, {"a": good, "b": bad}, cfg)
    assert (r.verdict, r.score) == (Verdict.MARGINAL, 80)
    metrics[1] = metric(name="b", weight=1, critical=True)
    r = judge(metrics, {"a": good, "b": bad}, cfg)
    assert r.verdict is Verdict.FAIL and r.reasons[1] == "critical metric(s) not passing: b"


def test_missing_data_is_not_a_pass() -> None:
    r = judge([metric()], {"m": MetricSamples(baseline=STEADY, treatment=[None, 0.01])}, CONFIG)
    assert r.verdict is Verdict.FAIL and r.metrics[0].status is MetricStatus.NODATA
    assert "too few samples" in r.metrics[0].reasons[0]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(samples, samples, st.floats(min_value=0.1, max_value=5), st.booleans()), min_size=1,
                max_size=5),
       st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_verdict_follows_score_and_critical_metrics(
    rows: list[tuple[list[float], list[float], float, bool]], a: float, b: float
) -> None:
    cfg = JudgeConfig(pass_score=max(a, b), marginal_score=min(a, b), min_samples=2)
    metrics = [metric(name=f"m{i}", weight=w, critical=c) for i, (_, _, w, c) in enumerate(rows)]
    data = {f"m{i}": MetricSamples(baseline=base, treatment=treat) for i, (base, treat, _, _) in enumerate(rows)}
    r = judge(metrics, data, cfg)
    assert 0 <= r.score <= 100
    passing = sum(m.weight for m in r.metrics if m.status is MetricStatus.PASS)
    assert r.score == pytest.approx(100 * passing / sum(m.weight for m in r.metrics), abs=1e-4)
    if any(m.critical and m.status is not MetricStatus.PASS for m in r.metrics):
        assert r.verdict is Verdict.FAIL
    elif r.score >= cfg.pass_score:
        assert r.verdict is Verdict.PASS
    elif r.score >= cfg.marginal_score:
        assert r.verdict is Verdict.MARGINAL
    else:
        assert r.verdict is Verdict.FAIL
    assert r.reasons and r.reasons[0].startswith(f"score {r.score:.1f}")


# --- faults as specified (westworld.evidence.check_faults) -------------------------------------------------------

def _fault(start: float, duration: float) -> FaultSpec:
    return FaultSpec(kind=FaultKind.LATENCY, start=timedelta(seconds=start), duration=timedelta(seconds=duration),
                     latency_ms=5)


def _events(applied: float, clear_sent: float, cleared: float, arm: str = "treatment") -> list[ChaosEvent]:
    common = {"fault_id": f"x-{arm}-chaos-0", "kind": "latency", "arm": arm, "fault": 0}
    return [ChaosEvent(**common, action="applied", step="apply", offset_s=applied, sent_s=applied - 0.05),
            ChaosEvent(**common, action="cleared", step="clear", offset_s=cleared, sent_s=clear_sent)]


@given(start=st.floats(0, 60), duration=st.floats(1, 60), late=st.floats(0, 0.99), lag=st.floats(0, 0.99))
def test_a_fault_within_its_slack_ran_as_specified(start: float, duration: float, late: float, lag: float) -> None:
    f = _fault(start, duration)
    slack = fault_slack(f.duration).total_seconds()
    end = start + duration
    runs = check_faults([f], _events(start + late * slack, end, end + lag * slack), ["treatment"])
    assert [r.as_specified for r in runs] == [True], runs[0].problems


@given(start=st.floats(0, 60), duration=st.floats(1, 60), down=st.floats(1.01, 30), where=st.sampled_from(
    ["apply late", "clear late", "clear early"]))
def test_a_fault_a_worker_outage_displaced_did_not(start: float, duration: float, down: float, where: str) -> None:
    """A worker down over an apply or a clear moves it by the downtime: beyond the slack, never as specified."""
    f = _fault(start, duration)
    slack = fault_slack(f.duration).total_seconds()
    end, miss = start + duration, down * slack
    applied, sent, cleared = start, end, end
    if where == "apply late":
        applied = start + miss
        sent = cleared = max(end, applied)  # the clear is never sent before the apply landed
    elif where == "clear late":
        sent, cleared = end + miss, end + miss
    else:
        sent = cleared = max(start, end - miss)
    runs = check_faults([f], _events(applied, sent, cleared), ["treatment"])
    assert not runs[0].as_specified and runs[0].problems
    assert fault_problems(runs)[0].startswith("fault 0 (latency) on the treatment: ")


def test_the_demo_outage_is_named_and_every_arm_is_checked() -> None:
    """The reported case: a 6 s loss fault at 18 s applied at 28.3 s and cleared at 28.4 s after a restart."""
    f = FaultSpec(kind=FaultKind.PACKET_LOSS, start=timedelta(seconds=18), duration=timedelta(seconds=6),
                  loss_pct=5)
    timeline = _events(28.3, 28.35, 28.4) + _events(18.05, 24.0, 24.05, arm="baseline")
    runs = check_faults([f], timeline, ["baseline", "treatment"])
    assert [(r.arm, r.as_specified) for r in runs] == [("baseline", True), ("treatment", False)]
    assert runs[1].problems == ["applied 10.3 s late (at 28.3 s, specified 18 s)",
                                "cleared 4.4 s late (at 28.4 s, specified 24 s)"]
    missing = check_faults([f], [], ["baseline"])[0]
    assert missing.problems == ["never applied", "never cleared"]
    failed = [e.model_copy(update={"action": "failed", "note": "boom"}) if e.step == "apply" else e
              for e in _events(18.0, 24.0, 24.0)]
    assert "its apply failed" in check_faults([f], failed, ["treatment"])[0].problems[0]


def test_an_invalid_run_is_never_scored() -> None:
    result = invalid_run(["fault 0 (latency) on the treatment: never applied"])
    assert result.verdict is Verdict.INVALID and result.score == 0 and result.metrics == []
    assert result.reasons[1] == "fault 0 (latency) on the treatment: never applied"
