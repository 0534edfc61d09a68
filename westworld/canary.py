"""Canary rollout rules: which nodes each step reaches, and what one analysis of a step decides.

Node choice is deterministic and stable: nodes are ordered by SHA-256 of ``<seed>/<node id>`` and each step
takes a prefix of that order, so steps nest (1% is inside 5% ...) and a replay or a restart picks the same
nodes. Steps that would reach no new node (1% and 5% of 20 nodes are both one node) are merged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from westworld.experiment import MetricSpec, format_path, step_count
from westworld.judge import MetricStatus, regression, relative_change, run_outcome, threshold_ok
from westworld.series import SELECTOR, MetricQuery, escape_label_value

TARGETS_QUERY = "up{selector}"  # one series per scraped node: its samples are the node's scrapes


class PlannedStep(BaseModel):
    index: int
    label: str = Field(description="As written in the plan, e.g. '25%' or '4'.")
    nodes: list[str] = Field(description="Every node on the new version once this step is done (cumulative).")
    added: list[str] = Field(description="Nodes this step moves.")


def order_nodes(node_ids: Sequence[str], seed: str) -> list[str]:
    return sorted(node_ids, key=lambda n: (hashlib.sha256(f"{seed}/{n}".encode()).hexdigest(), n))


def plan_steps(node_ids: Sequence[str], steps: Sequence[int | str], seed: str) -> list[PlannedStep]:
    """Cumulative node sets per step. Raises ValueError for an empty target or duplicate node ids."""
    if not node_ids:
        raise ValueError("the rollout target has no nodes")
    if len(set(node_ids)) != len(node_ids):
        raise ValueError("the rollout target lists a node twice")
    order = order_nodes(node_ids, seed)
    plan: list[PlannedStep] = []
    done = 0
    for i, step in enumerate(steps):
        count = step_count(step, len(order))
        if i == len(steps) - 1:
            count = max(count, len(order)) if isinstance(step, str) and step.strip() == "100%" else count
        if count <= done:
            continue
        plan.append(PlannedStep(index=len(plan), label=str(step), nodes=order[:count], added=order[done:count]))
        done = count
    return plan


class Decision(StrEnum):
    CONTINUE = "continue"  # keep baking / measuring
    ADVANCE = "advance"  # bake done and healthy: next step
    ROLLBACK = "rollback"
    PAUSE = "pause"  # bake done, not enough evidence either way: an operator decides


class Measurement(BaseModel):
    """One analysis of one metric: the canary nodes' value and the stable nodes' (the reference)."""

    metric: str
    canary: float | None
    stable: float | None
    ok: bool | None
    reason: str = ""


class StepAnalysis(BaseModel):
    decision: Decision
    reasons: list[str]
    failures: dict[str, int] = Field(default_factory=dict)


def measure(metric: MetricSpec, canary: float | None, stable: float | None) -> Measurement:
    """Judge one instant: the threshold, and the canary against the stable nodes (the metric's tolerance)."""
    ok = threshold_ok(metric, canary)
    reason = ""
    if ok is False:
        reason = f"{metric.name}={canary:.4g} breaks its threshold ({_bound(metric)})"
    elif ok is True and metric.compare_to_baseline and stable is not None and canary is not None \
            and not math.isnan(stable):
        change = relative_change(stable, canary)
        if regression(metric.direction, change, metric.tolerance):
            ok = False
            reason = (f"{metric.name}={canary:.4g} on the canary vs {stable:.4g} on stable nodes "
                      f"({_pct(change)}; tolerance {metric.tolerance:.0%})")
    elif ok is None:
        reason = f"{metric.name}: no value for the canary nodes"
    return Measurement(metric=metric.name, canary=canary, stable=stable, ok=ok, reason=reason)


def analyse_step(metrics: Sequence[MetricSpec], history: Sequence[Sequence[Measurement]],
                 bake_done: bool) -> StepAnalysis:
    """Decide from every analysis of this step so far (oldest first). A metric whose failures exceed its
    ``failure_limit`` rolls back at once; when the bake time is over, every metric needs its
    ``consecutive_successes`` (counted over the latest run of good measurements) to advance, else PAUSE."""
    reasons: list[str] = []
    failures: dict[str, int] = {}
    waiting: list[str] = []
    for m in metrics:
        series = [x for row in history for x in row if x.metric == m.name]
        status, failed, _ = run_outcome([x.ok for x in series], m.failure_limit, m.consecutive_successes)
        failures[m.name] = failed
        trailing = 0
        for x in reversed(series):
            if x.ok is not True:
                break
            trailing += 1
        if status is MetricStatus.FAIL:
            last_bad = next(x for x in reversed(series) if x.ok is False)
            reasons.append(f"{last_bad.reason} ({failed} failed measurement(s); {m.failure_limit} tolerated)")
        elif trailing < m.consecutive_successes:
            waiting.append(m.name)
    if reasons:
        return StepAnalysis(decision=Decision.ROLLBACK, reasons=reasons, failures=failures)
    if not bake_done:
        return StepAnalysis(decision=Decision.CONTINUE, reasons=["baking"], failures=failures)
    if waiting:
        return StepAnalysis(decision=Decision.PAUSE, failures=failures, reasons=[
            f"bake time over without enough consecutive good measurements for: {', '.join(waiting)}"])
    return StepAnalysis(decision=Decision.ADVANCE, reasons=["bake time over, every metric healthy"],
                        failures=failures)


class WatchInput(BaseModel):
    """Input of the ``watch_metrics`` activity: evaluate a step's queries after each fresh scrape of its canary
    nodes (every one of them scraped since the last evaluation) for ``span``, and stop early once a metric's breach
    is confirmed (:func:`confirmed_breach`)."""

    metrics: list[MetricSpec]
    queries: list[MetricQuery] = Field(description="``<metric>.canary`` and, with stable nodes, "
                                       "``<metric>.stable`` for every metric.")
    targets: str = Field(description="Series selector of the canary nodes' scrapes (``TARGETS_QUERY`` over the "
                         "canary); no series: nothing is evaluated until the span ends.")
    reference: dict[str, float | None] = Field(default_factory=dict, description="Stable value per metric "
                                               "where there are no stable nodes left to query.")
    span: timedelta = Field(gt=timedelta(0), description="How long to watch at most (one analysis interval).")
    max_samples: int = Field(8, ge=1, le=1000, description="Stop after this many fresh samples (a watch holds "
                             "an activity slot and real time: time-skipped tests cannot skip it).")
    poll: timedelta = Field(timedelta(milliseconds=50), gt=timedelta(0),
                            description="Shortest time between two looks for a fresh scrape.")


class WatchSample(BaseModel):
    """One evaluation right after a fresh scrape of every canary node."""

    scraped_at: datetime = Field(description="The scrape that made this sample fresh.")
    measurements: list[Measurement]


class WatchResult(BaseModel):
    samples: list[WatchSample]
    breach: bool = Field(description="The watch stopped early: the last samples confirm a breach.")


def sample_row(metrics: Sequence[MetricSpec], values: Mapping[str, float | None],
               reference: Mapping[str, float | None]) -> list[Measurement]:
    """Judge one evaluation of a step's queries (``<metric>.canary``/``.stable``) metric by metric; a metric with
    no stable query is compared with ``reference``."""
    return [measure(m, values.get(f"{m.name}.canary"),
                    values[f"{m.name}.stable"] if f"{m.name}.stable" in values else reference.get(m.name))
            for m in metrics]


def confirmed_breach(metrics: Sequence[MetricSpec], samples: Sequence[Sequence[Measurement]]) -> StepAnalysis | None:
    """A breach seen between two analyses, confirmed: some metric failed on its last ``failure_limit + 1`` fresh
    samples in a row (the tolerance is the spec's, as at each analysis). ROLLBACK naming it, or None."""
    reasons: list[str] = []
    failures: dict[str, int] = {}
    for m in metrics:
        run: list[Measurement] = []
        for row in reversed(samples):
            x = next((x for x in row if x.metric == m.name), None)
            if x is None or x.ok is not False:
                break
            run.append(x)
        failures[m.name] = len(run)
        if len(run) > m.failure_limit:
            reasons.append(f"{run[0].reason} ({len(run)} failed measurement(s) in a row after fresh scrapes; "
                           f"{m.failure_limit} tolerated)")
    if not reasons:
        return None
    return StepAnalysis(decision=Decision.ROLLBACK, reasons=reasons, failures=failures)


def group_query(promql: str, labels: dict[str, str], node_label: str, node_ids: Sequence[str]) -> str:
    """``promql`` with ``{selector}`` matching the given nodes (a regex over ``node_label``) and ``labels``."""
    parts = [f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items())]
    pattern = "|".join(_regex_escape(n) for n in node_ids)
    parts.append(f'{node_label}=~"{escape_label_value(pattern)}"')
    return promql.replace(SELECTOR, "{" + ",".join(parts) + "}")


def _regex_escape(s: str) -> str:
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in s)


def _bound(metric: MetricSpec) -> str:
    t = metric.threshold
    assert t is not None
    parts = [f"<= {t.max:g}" if t.max is not None else "", f">= {t.min:g}" if t.min is not None else ""]
    return " and ".join(p for p in parts if p)


def _pct(change: float) -> str:
    return f"{change:+.1%}" if math.isfinite(change) else "from zero"


__all__ = [
    "TARGETS_QUERY",
    "Decision",
    "Measurement",
    "PlannedStep",
    "StepAnalysis",
    "WatchInput",
    "WatchResult",
    "WatchSample",
    "analyse_step",
    "confirmed_breach",
    "format_path",
    "group_query",
    "measure",
    "order_nodes",
    "plan_steps",
    "sample_row",
]
