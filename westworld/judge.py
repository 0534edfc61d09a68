"""The judge: treatment vs baseline, per metric, then one score and a verdict with reasons.

Two checks per metric, each optional:

* **Thresholds** over every measurement of the treatment (like Argo Rollouts' analysis): a measurement beyond
  ``threshold.min``/``max`` fails; more than ``failure_limit`` failures fail the metric; the metric passes once
  ``consecutive_successes`` good measurements came in a row; otherwise it is inconclusive.
* **Comparison with the baseline** (like Kayenta's Mann-Whitney classifier): a two-sided Mann-Whitney U test
  (rank sums with tie correction, normal approximation with continuity correction) at the configured confidence;
  a significant move in the metric's bad direction larger than its ``tolerance`` (relative change of the
  medians) is a regression.

A run whose chaos did not run as specified is not judged at all: :func:`invalid_run` gives it the verdict
``invalid`` (no score, no metric), which is never put to a vote nor rolled out.

The score is the weight share of passing metrics (0-100). ``score >= pass_score`` passes, ``>= marginal_score``
is marginal, below fails; a critical metric that does not pass fails the verdict whatever the score.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, Field

from westworld.experiment import Direction, JudgeConfig, MetricSpec


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105
    MARGINAL = "marginal"
    FAIL = "fail"
    INVALID = "invalid"  # the run did not do what its spec says (a fault did not run as specified): never judged


class MetricStatus(StrEnum):
    PASS = "pass"  # noqa: S105
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NODATA = "nodata"


class MannWhitney(BaseModel):
    u: float = Field(description="U of the treatment sample.")
    z: float
    p_value: float = Field(description="Two-sided.")
    n_baseline: int
    n_treatment: int


class MetricSamples(BaseModel):
    """One metric's measurements per arm, in time order (None: no value at that instant)."""

    baseline: list[float | None] = Field(default_factory=list)
    treatment: list[float | None] = Field(default_factory=list)


class MetricJudgement(BaseModel):
    name: str
    status: MetricStatus
    critical: bool
    weight: float
    baseline_median: float | None = None
    treatment_median: float | None = None
    relative_change: float | None = None
    test: MannWhitney | None = None
    threshold_failures: int = 0
    longest_success_run: int = 0
    reasons: list[str] = Field(default_factory=list)


class JudgeResult(BaseModel):
    verdict: Verdict
    score: float = Field(ge=0, le=100)
    metrics: list[MetricJudgement]
    reasons: list[str]


def mann_whitney_u(baseline: Sequence[float], treatment: Sequence[float]) -> MannWhitney:
    """Two-sided Mann-Whitney U of ``treatment`` against ``baseline`` (normal approximation, tie-corrected).

    Raises:
        ValueError: either sample is empty.
    """
    n1, n2 = len(treatment), len(baseline)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    pooled = sorted([(v, 1) for v in treatment] + [(v, 0) for v in baseline])
    n = n1 + n2
    rank_sum, ties, i = 0.0, 0.0, 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        avg = (i + j) / 2 + 1
        rank_sum += avg * sum(1 for k in range(i, j + 1) if pooled[k][1] == 1)
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    u = rank_sum - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return MannWhitney(u=u, z=0.0, p_value=1.0, n_baseline=n2, n_treatment=n1)
    diff = u - mu
    z = (diff - math.copysign(0.5, diff)) / math.sqrt(var) if abs(diff) >= 0.5 else 0.0
    p = min(1.0, math.erfc(abs(z) / math.sqrt(2)))
    return MannWhitney(u=u, z=z, p_value=p, n_baseline=n2, n_treatment=n1)


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def relative_change(reference: float, value: float) -> float:
    """(value - reference) / |reference|; a move away from zero counts as an infinite relative change."""
    if reference == value:
        return 0.0
    if reference == 0:
        return math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


def regression(direction: Direction, change: float, tolerance: float) -> bool:
    """True if ``change`` (relative) goes the metric's bad way by more than ``tolerance``."""
    if direction is Direction.LOWER:
        return change > tolerance
    if direction is Direction.HIGHER:
        return change < -tolerance
    return abs(change) > tolerance


def threshold_ok(metric: MetricSpec, value: float | None) -> bool | None:
    """One measurement against the metric's threshold: True, False, or None when there is no value."""
    if value is None or math.isnan(value):
        return None
    t = metric.threshold
    if t is None:
        return True
    return not ((t.max is not None and value > t.max) or (t.min is not None and value < t.min))


def run_outcome(outcomes: Sequence[bool | None], failure_limit: int, consecutive: int) -> tuple[MetricStatus, int, int]:
    """Argo-style analysis of measurements in order: (status, failures, longest success run).

    FAIL once failures exceed ``failure_limit``; PASS when a run of ``consecutive`` successes occurred;
    NODATA when nothing was measured; otherwise INCONCLUSIVE. A missing value breaks a success run.
    """
    failures = run = longest = 0
    for ok in outcomes:
        if ok is False:
            failures += 1
            run = 0
        elif ok is True:
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    if failures > failure_limit:
        return MetricStatus.FAIL, failures, longest
    if all(o is None for o in outcomes):
        return MetricStatus.NODATA, failures, longest
    if longest >= consecutive:
        return MetricStatus.PASS, failures, longest
    return MetricStatus.INCONCLUSIVE, failures, longest


def judge_metric(metric: MetricSpec, samples: MetricSamples, config: JudgeConfig) -> MetricJudgement:
    base = [v for v in samples.baseline if v is not None and not math.isnan(v)]
    treat = [v for v in samples.treatment if v is not None and not math.isnan(v)]
    j = MetricJudgement(name=metric.name, status=MetricStatus.PASS, critical=metric.critical, weight=metric.weight)
    statuses: list[MetricStatus] = []
    if metric.threshold is not None:
        status, j.threshold_failures, j.longest_success_run = run_outcome(
            [threshold_ok(metric, v) for v in samples.treatment], metric.failure_limit, metric.consecutive_successes)
        statuses.append(status)
        bound = " and ".join(x for x in (f"<= {metric.threshold.max:g}" if metric.threshold.max is not None else "",
                                         f">= {metric.threshold.min:g}" if metric.threshold.min is not None else "")
                             if x)
        if status is MetricStatus.FAIL:
            j.reasons.append(f"{metric.name}: {j.threshold_failures} of {len(samples.treatment)} measurements broke "
                             f"the threshold ({bound}); {metric.failure_limit} tolerated")
        elif status is MetricStatus.INCONCLUSIVE:
            j.reasons.append(f"{metric.name}: only {j.longest_success_run} consecutive good measurements, "
                             f"{metric.consecutive_successes} needed")
        elif status is MetricStatus.NODATA:
            j.reasons.append(f"{metric.name}: no treatment measurements")
    if metric.compare_to_baseline:
        statuses.append(_compare(metric, base, treat, config, j))
    for s in (MetricStatus.FAIL, MetricStatus.NODATA, MetricStatus.INCONCLUSIVE):
        if s in statuses:
            j.status = s
            break
    if j.status is MetricStatus.PASS:
        j.reasons.append(f"{metric.name}: pass" + (f" (median {j.baseline_median:.4g} -> {j.treatment_median:.4g})"
                                                   if j.treatment_median is not None and j.baseline_median is not None
                                                   else ""))
    return j


def _compare(metric: MetricSpec, base: list[float], treat: list[float], config: JudgeConfig,
             j: MetricJudgement) -> MetricStatus:
    if len(base) < config.min_samples or len(treat) < config.min_samples:
        j.reasons.append(f"{metric.name}: too few samples to compare (baseline {len(base)}, treatment {len(treat)}; "
                         f"{config.min_samples} needed)")
        return MetricStatus.NODATA
    j.test = mann_whitney_u(base, treat)
    j.baseline_median, j.treatment_median = median(base), median(treat)
    j.relative_change = relative_change(j.baseline_median, j.treatment_median)
    alpha = 1 - config.confidence
    significant = j.test.p_value < alpha
    if significant and regression(metric.direction, j.relative_change, metric.tolerance):
        j.reasons.append(
            f"{metric.name}: treatment median {j.treatment_median:.4g} vs baseline {j.baseline_median:.4g} "
            f"({_pct(j.relative_change)}, {metric.direction.value} is better, tolerance {metric.tolerance:.0%}); "
            f"Mann-Whitney p={j.test.p_value:.3g} < {alpha:.3g}")
        return MetricStatus.FAIL
    return MetricStatus.PASS


def judge(metrics: Sequence[MetricSpec], data: dict[str, MetricSamples], config: JudgeConfig) -> JudgeResult:
    """Judge every metric and aggregate (Kayenta-like: weighted share of passing metrics, critical veto)."""
    judged = [judge_metric(m, data.get(m.name, MetricSamples()), config) for m in metrics]
    total = sum(j.weight for j in judged)
    score = 100.0 * sum(j.weight for j in judged if j.status is MetricStatus.PASS) / total if total else 0.0
    score = round(min(100.0, max(0.0, score)), 6)
    critical = [j for j in judged if j.critical and j.status is not MetricStatus.PASS]
    reasons = [r for j in judged for r in j.reasons if j.status is not MetricStatus.PASS]
    if critical:
        verdict = Verdict.FAIL
        reasons.insert(0, f"critical metric(s) not passing: {', '.join(j.name for j in critical)}")
    elif score >= config.pass_score:
        verdict = Verdict.PASS
    elif score >= config.marginal_score:
        verdict = Verdict.MARGINAL
    else:
        verdict = Verdict.FAIL
    reasons.insert(0, f"score {score:.1f} (pass >= {config.pass_score:g}, marginal >= {config.marginal_score:g}): "
                      f"{verdict.value}")
    if verdict is Verdict.PASS:
        reasons += [r for j in judged for r in j.reasons if j.status is MetricStatus.PASS]
    return JudgeResult(verdict=verdict, score=score, metrics=judged, reasons=reasons)


def invalid_run(problems: Sequence[str]) -> JudgeResult:
    """The verdict of a run that did not do what its spec says: ``invalid``, score 0, no metric judged (its samples
    were not taken under the specified conditions), the problems as reasons."""
    return JudgeResult(verdict=Verdict.INVALID, score=0.0, metrics=[], reasons=[
        "invalid run: the chaos did not run as specified, so it is not judged, not put to a vote and not rolled out "
        "(run the experiment again)", *problems])


def _pct(change: float) -> str:
    return f"{change:+.1%}" if math.isfinite(change) else ("from zero" if change > 0 else "to below zero")
