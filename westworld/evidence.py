"""The evidence bundle of an experiment: what was run, what was done to it, what was measured, what was decided.

The bundle's hash is SHA-256 over its canonical JSON (sorted keys, no whitespace), so the same evidence always
has the same hash; the hash goes to the audit log and into the DAO proposal, and names the stored folder.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from westworld.audit import canonical_json
from westworld.judge import JudgeResult
from westworld.series import Series


class ChaosEvent(BaseModel):
    """A fault applied or cleared, at an offset from the run's start."""

    fault_id: str
    kind: str
    action: str = Field(description="applied | cleared | failed")
    offset_s: float
    arm: str
    nodes: list[str] = Field(default_factory=list)
    mode: str = ""
    note: str = ""


class EvidenceBundle(BaseModel):
    experiment: str
    spec_hash: str
    spec: dict[str, Any]
    started_at: datetime
    ended_at: datetime
    chaos_mode: str = Field("", description="How faults were applied on this backend, and why.")
    chaos_timeline: list[ChaosEvent] = Field(default_factory=list)
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
