"""What crosses between CharterSyncWorkflow and its activities, and the scrape layer's rules built from a charter.

The charter in force is the one on chain (``contracts/src/Charter.sol``: version, SHA-256 of the file, per-metric
flags). The sync reads it (:class:`CharterOnChain`), has the enforcement points load the file whose hash is that one
(:class:`CharterEnforceInput` / :class:`CharterEnforceResult`) and audits what changed. Only hashes, versions and
counts travel through workflow history; the file itself is read inside the activity.

:func:`metric_relabel_configs` is the third enforcement layer: Prometheus's ``metric_relabel_configs`` keeping only
the charter's metric names (and the gate's own counters) and, per metric, only its allowed labels.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from westworld.charter import Charter

CHARTER_JOB = "charter-gate"  # the Prometheus job scraping the gate: the charter's scrape rules apply to it
GATE_OWN_METRICS = "westworld_charter_.*"  # the gate's counters (kept, dropped by reason, kernel drops)
GATE_OWN_LABELS = ("reason", "name_hash", "layer")
TARGET_LABELS = ("job", "instance")  # attached by Prometheus to every series of a target


class CharterMetricRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    allowed: bool
    consent_required: bool
    retention_days: int


class CharterOnChain(BaseModel):
    """The Charter contract's state: ``policy_hash`` is lower-case hex without 0x."""

    model_config = ConfigDict(frozen=True)

    address: str
    version: int
    policy_hash: str
    metrics: tuple[CharterMetricRule, ...] = ()


class CharterCheckpointInput(BaseModel):
    """An audit-log head for ``Charter.anchorCheckpoint``: tree size and root (hex)."""

    size: int = Field(ge=0)
    root: str


class CharterEnforceInput(BaseModel):
    """Put the charter with this version and hash in force at every enforcement point."""

    version: int
    policy_hash: str


class LayerState(BaseModel):
    """One enforcement point after a push: ``state`` is applied, unchanged, refused or unavailable."""

    layer: str = Field(description="gate, kernel or scrape")
    state: str
    detail: str = ""


class CharterEnforceResult(BaseModel):
    """What the push did. ``refused`` says why the file was not put in force (then nothing was pushed)."""

    version: int
    policy_hash: str
    file_hash: str = Field(description="SHA-256 of the configured charter file as read now.")
    refused: str = ""
    layers: list[LayerState] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list, description="Metric names the whitelist lets through.")
    drops: dict[str, int] = Field(default_factory=dict, description="Drops so far by layer:reason (the gate's "
                                  "counters and the kernel's), for the audit trail.")

    @property
    def changed(self) -> bool:
        return any(layer.state == "applied" for layer in self.layers)


class CharterSyncInput(BaseModel):
    """CharterSyncWorkflow (id ``charter-sync``, started by `westworld up`)."""

    poll_interval: timedelta = Field(timedelta(seconds=30), description="How often the chain is read.")
    continue_after_polls: int = Field(200, ge=1, description="Continue as new after this many polls.")
    applied_version: int = Field(0, description="Handed over by continue-as-new: the version last put in force.")
    applied_hash: str = ""
    refused_key: str = Field("", description="Handed over: the (version, hash, file) refusal already audited.")
    audited_drops: dict[str, int] = Field(default_factory=dict, description="Handed over: drops already audited.")
    forbidden_case_every: timedelta = Field(
        timedelta(hours=24), description="Forbidden metrics seen open a violation case, at most one per this "
                                         "period (the drops between are in the audit log and in the next case).")
    forbidden_case_at: datetime | None = Field(None, description="Handed over: when the last such case was opened.")
    violation_cases: list[str] = Field(default_factory=list, description="Handed over: the cases opened so far.")


class CharterSyncState(BaseModel):
    """The query ``state``: what is in force and what the last poll saw."""

    applied_version: int = 0
    applied_hash: str = ""
    chain_version: int = 0
    chain_hash: str = ""
    refused: str = ""
    layers: list[LayerState] = Field(default_factory=list)
    polls: int = 0
    violation_cases: list[str] = Field(default_factory=list, description="Cases the sync opened itself: "
                                       "forbidden metrics a node tried to send (newest last).")
    case_problem: str = Field("", description="Why the last such case could not be opened (empty: it was).")


# Drops that mean a node tried to collect what the charter forbids (not a consent or a format problem): each opens a
# violation case, as the charter asks ("violations the system finds itself ... open cases too").
FORBIDDEN_DROPS = frozenset({"gate:blocked", "gate:not_whitelisted", "gate:malformed_name", "kernel:not_allowed"})


def forbidden_report(delta: dict[str, int], totals: dict[str, int], version: int) -> str:
    """The text sealed to the committee for a case the sync opens: counts only (no node or user identifier)."""
    seen = ", ".join(f"{k} {v}" for k, v in sorted(delta.items()) if k in FORBIDDEN_DROPS)
    return (f"Forbidden metrics were sent under charter version {version} and dropped before collection: {seen} "
            f"since the last audited poll (totals so far: {dict(sorted(totals.items()))}). The drops are in the "
            "audit log (charter.drops); the gate's /status names the metric-name hashes the kernel dropped.")


def _alternation(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names)) or "$^"  # $^ matches nothing


def metric_relabel_configs(charter: Charter) -> list[dict[str, Any]]:
    """Prometheus rules for a job scraping the gate: keep only allowed names, then only each metric's labels.

    A label allowed for some metrics is emptied (which removes it) on every other metric; ``labelkeep`` then
    removes every label no metric allows. Target labels (job, instance) and the gate's own labels stay."""
    names = [m.name for m in charter.spec.metrics]
    rules: list[dict[str, Any]] = [{
        "source_labels": ["__name__"], "regex": f"(?:{_alternation(names)}|{GATE_OWN_METRICS})", "action": "keep",
    }]
    every_label = sorted({label for m in charter.spec.metrics for label in m.labels})
    for label in sorted({*every_label, *GATE_OWN_LABELS}):
        without = [re.escape(m.name) for m in charter.spec.metrics if label not in m.labels]
        if label not in GATE_OWN_LABELS:
            without.append(GATE_OWN_METRICS)
        if without:
            rules.append({"source_labels": ["__name__"], "regex": "(?:" + "|".join(sorted(without)) + ")",
                          "target_label": label, "replacement": "", "action": "replace"})
    kept = sorted({*every_label, *GATE_OWN_LABELS, *TARGET_LABELS, "__name__"})
    rules.append({"regex": "(?:" + "|".join(kept) + ")", "action": "labelkeep"})
    return rules


def fail_closed_relabel() -> list[dict[str, Any]]:
    """Before any charter is in force: only the gate's own counters are kept."""
    return [{"source_labels": ["__name__"], "regex": GATE_OWN_METRICS, "action": "keep"}]


PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                            "scrape_samples_post_metric_relabeling", "scrape_series_added"})


def series_problem(charter: Charter, labels: dict[str, str]) -> str | None:
    """Why a series Prometheus holds for the gate's job (``labels`` with ``__name__``) is outside the charter, or
    None. Prometheus's own per-target series and the gate's counters are not telemetry."""
    name = labels.get("__name__", "")
    allowed = {m.name: set(m.labels) for m in charter.spec.metrics}
    base = set(TARGET_LABELS) | {"__name__"}
    if name in PROMETHEUS_OWN:
        return None
    if re.fullmatch(GATE_OWN_METRICS, name):
        extra = set(labels) - base - set(GATE_OWN_LABELS)
    elif name in allowed:
        extra = set(labels) - base - allowed[name]
    else:
        return f"name {name!r} is not in the charter"
    return f"{name} carries labels {sorted(extra)} the charter does not allow" if extra else None
