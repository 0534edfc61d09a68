"""The evidence bundle of an experiment: what was run, what was done to it, what was measured, what was decided.

The bundle's hash is SHA-256 over its canonical JSON (sorted keys, no whitespace), so the same evidence always
has the same hash; the hash goes to the audit log and into the DAO proposal, and names the stored folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from westworld.audit import canonical_json
from westworld.experiment import FaultSpec
from westworld.judge import JudgeResult
from westworld.series import Series

FAULT_SLACK_MIN = timedelta(milliseconds=500)
FAULT_SLACK_MAX = timedelta(seconds=1)


class ChaosEvent(BaseModel):
    """A fault applied or cleared, at an offset from the run's start (``offset_s``: when the activity had done it,
    ``sent_s``: when the workflow asked for it)."""

    fault_id: str
    kind: str
    action: str = Field(description="applied | cleared | failed")
    offset_s: float
    arm: str
    nodes: list[str] = Field(default_factory=list)
    mode: str = ""
    note: str = ""
    fault: int | None = Field(None, description="Index of the fault in spec.chaos.")
    step: str = Field("", description="apply | clear (what a failed event was doing)")
    sent_s: float | None = None


class FaultRun(BaseModel):
    """One fault of the spec on one arm: the window the spec gives it and the one it actually held (seconds from the
    run's start), and whether the two agree within :func:`fault_slack`."""

    fault: int = Field(description="Index in spec.chaos.")
    kind: str
    arm: str
    specified_start_s: float
    specified_end_s: float
    slack_s: float
    applied_s: float | None = Field(None, description="The apply had landed (its activity completed).")
    clear_sent_s: float | None = Field(None, description="The clear was asked for: the fault held at least until then.")
    cleared_s: float | None = Field(None, description="The clear had landed.")
    as_specified: bool
    problems: list[str] = Field(default_factory=list)


class EvidenceBundle(BaseModel):
    experiment: str
    spec_hash: str
    spec: dict[str, Any]
    started_at: datetime
    ended_at: datetime
    chaos_mode: str = Field("", description="How faults were applied on this backend, and why.")
    chaos_timeline: list[ChaosEvent] = Field(default_factory=list)
    faults: list[FaultRun] = Field(default_factory=list, description="Each fault's specified vs actual window; a "
                                   "run with one not as specified is invalid (judgement.verdict 'invalid').")
    series: list[Series] = Field(default_factory=list)
    judgement: JudgeResult

    def digest(self) -> str:
        return bundle_hash(self)


class EvidenceInput(BaseModel):
    bundle: EvidenceBundle


class EvidenceRef(BaseModel):
    """Where a stored bundle is: its hash, its folder, and the files in it (bundle.json and the plots)."""

    hash: str
    path: str
    url: str
    files: list[str] = Field(default_factory=list)


def bundle_hash(bundle: EvidenceBundle) -> str:
    return hashlib.sha256(canonical_json(bundle.model_dump(mode="json")).encode()).hexdigest()


def fault_slack(duration: timedelta) -> timedelta:
    """How far a fault's apply or clear may land from its specified instant and still count as run as specified:
    a quarter of the fault's duration, at least 0.5 s and at most 1 s (an apply lands within ~0.1 s normally; a
    worker that was down misses by its downtime)."""
    return min(FAULT_SLACK_MAX, max(FAULT_SLACK_MIN, duration / 4))


def check_faults(chaos: Sequence[FaultSpec], timeline: Sequence[ChaosEvent], arms: Sequence[str]) -> list[FaultRun]:
    """Compare each fault's specified window with what the timeline shows it held, per arm.

    A fault ran as specified when its apply landed by ``start + slack``, its clear was not asked for before
    ``end - slack`` and had landed by ``end + slack``, and neither failed. Anything else (a worker that was down
    over an apply or a clear, a retried activity, a failure) is a fault that did not run as specified.
    """
    runs: list[FaultRun] = []
    for i, f in enumerate(chaos):
        start, end = f.start.total_seconds(), (f.start + f.duration).total_seconds()
        slack = fault_slack(f.duration).total_seconds()
        for arm in arms:
            mine = [e for e in timeline if e.fault == i and e.arm == arm]
            apply = next((e for e in mine if e.step == "apply"), None)
            clear = next((e for e in mine if e.step == "clear"), None)
            run = FaultRun(fault=i, kind=f.kind.value, arm=arm, specified_start_s=start, specified_end_s=end,
                           slack_s=slack, as_specified=False)
            problems = run.problems
            if apply is None:
                problems.append("never applied")
            elif apply.action == "failed":
                problems.append(f"its apply failed at {apply.offset_s:.1f} s: {apply.note}")
            else:
                run.applied_s = apply.offset_s
                if apply.offset_s > start + slack:
                    problems.append(f"applied {apply.offset_s - start:.1f} s late (at {apply.offset_s:.1f} s, "
                                    f"specified {start:g} s)")
            if clear is None:
                problems.append("never cleared")
            elif clear.action == "failed":
                problems.append(f"its clear failed at {clear.offset_s:.1f} s: {clear.note}")
            else:
                run.clear_sent_s, run.cleared_s = clear.sent_s, clear.offset_s
                if clear.sent_s is not None and clear.sent_s < end - slack:
                    problems.append(f"cleared {end - clear.sent_s:.1f} s early (at {clear.sent_s:.1f} s, "
                                    f"specified {end:g} s)")
                if clear.offset_s > end + slack:
                    problems.append(f"cleared {clear.offset_s - end:.1f} s late (at {clear.offset_s:.1f} s, "
                                    f"specified {end:g} s)")
            run.as_specified = not problems
            runs.append(run)
    return runs


def fault_problems(runs: Sequence[FaultRun]) -> list[str]:
    """One line per fault (and arm) that did not run as specified."""
    return [f"fault {r.fault} ({r.kind}) on the {r.arm}: {'; '.join(r.problems)} (window {r.specified_start_s:g}-"
            f"{r.specified_end_s:g} s, {r.slack_s:g} s slack)" for r in runs if not r.as_specified]
