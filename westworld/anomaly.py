"""Anomaly detectors over agents' recent actions (pure): findings with a severity and the reasons.

    coverage        distinct nodes an agent touched in the short window, as a share of the live nodes
    concentration   distinct nodes an agent touched in the long window (the slow creep), as a share
                    (both leave out actions endorsed by k peer signatures: the peers vouched for those)
    rate            the agent's actions in the short window
    spike           the short-window count against the agent's own baseline over the long window
    probing         the agent's denied checks in the short window

A critical finding halts the network (AnomalyWatchWorkflow starts NetworkHaltWorkflow).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class AgentEvent(BaseModel):
    """One capability decision of an agent (allowed or denied) and the nodes it touched."""

    seq: int
    agent_id: str
    action_id: str
    at: datetime
    allowed: bool
    node_ids: list[str] = Field(default_factory=list)
    caveat: str = ""
    endorsed_by: list[str] = Field(default_factory=list, description="Peers that signed this (wide) action.")


class AnomalyConfig(BaseModel):
    short_window: timedelta = timedelta(minutes=10)
    long_window: timedelta = timedelta(hours=24)
    coverage_warn_pct: float = 2.0
    coverage_critical_pct: float = 10.0
    concentration_warn_pct: float = 5.0
    concentration_critical_pct: float = 20.0
    rate_warn: int = Field(30, description="Actions per short window that count as a spike.")
    rate_high: int = 100
    spike_factor: float = Field(5.0, description="Short-window actions this many times the agent's own baseline.")
    spike_min: int = Field(10, description="...and at least this many, for a spike to count.")
    denials_warn: int = Field(5, description="Denied checks per short window that count as probing.")
    denials_high: int = 20


class Finding(BaseModel):
    agent_id: str
    kind: str
    severity: Severity
    value: float
    threshold: float
    reasons: list[str]


def config_problems(cfg: AnomalyConfig, poll_interval: timedelta) -> list[str]:
    """What makes a watch configuration unusable (empty when it is sound): each warning level at or below its
    critical/high level, positive windows and thresholds, and a poll that fits in the short window (a slower poll
    would let a burst age out of the short window between two reads)."""
    problems = [f"{name} must be > 0" for name, value in (
        ("short_window", cfg.short_window.total_seconds()), ("long_window", cfg.long_window.total_seconds()),
        ("coverage_warn_pct", cfg.coverage_warn_pct), ("concentration_warn_pct", cfg.concentration_warn_pct),
        ("rate_warn", cfg.rate_warn), ("denials_warn", cfg.denials_warn), ("spike_factor", cfg.spike_factor),
        ("poll_interval", poll_interval.total_seconds())) if value <= 0]
    problems += [f"{low} ({lv:g}) must not exceed {high} ({hv:g})" for low, lv, high, hv in (
        ("coverage_warn_pct", cfg.coverage_warn_pct, "coverage_critical_pct", cfg.coverage_critical_pct),
        ("concentration_warn_pct", cfg.concentration_warn_pct, "concentration_critical_pct",
         cfg.concentration_critical_pct),
        ("rate_warn", cfg.rate_warn, "rate_high", cfg.rate_high),
        ("denials_warn", cfg.denials_warn, "denials_high", cfg.denials_high)) if lv > hv]
    if cfg.short_window > cfg.long_window:
        problems.append(f"short_window ({cfg.short_window}) must not exceed long_window ({cfg.long_window})")
    if poll_interval > cfg.short_window:
        problems.append(f"poll_interval ({poll_interval}) must not exceed short_window ({cfg.short_window})")
    return problems


def prune(events: Iterable[AgentEvent], now: datetime, cfg: AnomalyConfig) -> list[AgentEvent]:
    """The events still inside the long window."""
    return [e for e in events if e.at > now - cfg.long_window]


def _grade(value: float, levels: list[tuple[float, Severity]]) -> tuple[Severity, float] | None:
    for threshold, severity in sorted(levels, key=lambda lv: -RANK[lv[1]]):
        if value >= threshold:
            return severity, threshold
    return None


def evaluate(events: Iterable[AgentEvent], now: datetime, live_nodes: int, cfg: AnomalyConfig) -> list[Finding]:
    """Findings per agent, worst first."""
    by_agent: dict[str, list[AgentEvent]] = {}
    for e in events:
        if e.at > now - cfg.long_window and e.at <= now:
            by_agent.setdefault(e.agent_id, []).append(e)
    findings: list[Finding] = []
    live = max(live_nodes, 1)
    for agent, evs in sorted(by_agent.items()):
        short = [e for e in evs if e.at > now - cfg.short_window]
        # Actions k peers signed for are vouched for: they count as actions, not as an agent's own reach.
        own = [e for e in evs if e.allowed and not e.endorsed_by]
        recent_nodes = {n for e in own if e.at > now - cfg.short_window for n in e.node_ids}
        all_nodes = {n for e in own for n in e.node_ids}
        denials = [e for e in short if not e.allowed]
        checks: list[tuple[str, float, list[tuple[float, Severity]], str]] = [
            ("coverage", 100.0 * len(recent_nodes) / live,
             [(cfg.coverage_warn_pct, Severity.WARNING), (cfg.coverage_critical_pct, Severity.CRITICAL)],
             f"touched {len(recent_nodes)} distinct nodes of {live_nodes} live in {cfg.short_window}"),
            ("concentration", 100.0 * len(all_nodes) / live,
             [(cfg.concentration_warn_pct, Severity.WARNING), (cfg.concentration_critical_pct, Severity.CRITICAL)],
             f"touched {len(all_nodes)} distinct nodes of {live_nodes} live in {cfg.long_window} "
             f"across {len(own)} unendorsed actions"),
            ("rate", float(len(short)),
             [(cfg.rate_warn, Severity.WARNING), (cfg.rate_high, Severity.HIGH)],
             f"{len(short)} actions in {cfg.short_window}"),
            ("probing", float(len(denials)),
             [(cfg.denials_warn, Severity.WARNING), (cfg.denials_high, Severity.HIGH)],
             f"{len(denials)} denied checks in {cfg.short_window} (caveats: "
             f"{sorted({e.caveat for e in denials})[:5]})"),
        ]
        spike = _spike(evs, len(short), now, cfg)
        if spike is not None:
            findings.append(Finding(agent_id=agent, kind="spike", severity=Severity.WARNING, value=spike[0],
                                    threshold=cfg.spike_factor, reasons=[f"{agent} {spike[1]}"]))
        for kind, value, levels, reason in checks:
            graded = _grade(value, levels)
            if graded is not None:
                severity, threshold = graded
                unit = "%" if kind in ("coverage", "concentration") else ""
                findings.append(Finding(agent_id=agent, kind=kind, severity=severity, value=value,
                                        threshold=threshold,
                                        reasons=[f"{agent} {reason}: {value:g}{unit} >= {threshold:g}{unit}"]))
    return sorted(findings, key=lambda f: (-RANK[f.severity], f.agent_id, f.kind))


def _spike(evs: list[AgentEvent], recent: int, now: datetime, cfg: AnomalyConfig) -> tuple[float, str] | None:
    """(factor, reason) when the short-window count is ``spike_factor`` times the agent's own baseline (its
    average per short window over the rest of the long window), else None."""
    before = [e for e in evs if e.at <= now - cfg.short_window]
    windows = (cfg.long_window - cfg.short_window) / cfg.short_window
    if not before or recent < cfg.spike_min or windows <= 0:
        return None
    baseline = len(before) / windows
    factor = recent / baseline
    if factor < cfg.spike_factor:
        return None
    return factor, (f"ran {recent} actions in {cfg.short_window}, {factor:.1f}x its baseline of {baseline:.2f} "
                    f"per {cfg.short_window}")
