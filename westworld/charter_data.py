"""What the charter's rights workflows carry (pure): consent, retention purge and data export models, and the
export bundle itself (a zip of JSON and CSV that says, for every item, what it is and how long it is kept).

Only counts, hashes, references (a CID, a file digest) and signed public requests travel through workflow
history; the records gathered for an export and the bundle's bytes stay inside the activity.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.charter import ADDRESS
from westworld.charter_consent import ConsentContext, ConsentRequest
from westworld.charter_rights import ExportRequest

BUNDLE_RETENTION_DAYS = 7  # a delivered (sealed) bundle is deleted after this many days
FORMAT = "westworld-export/v1"


# -- consent -------------------------------------------------------------------------------------------------

class ConsentInput(BaseModel):
    """Input of CharterConsentWorkflow (one per data subject, id ``consent:<subject>``)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(pattern=ADDRESS)
    continue_after: int = Field(200, ge=10, le=1000, description="Messages per run before continue-as-new.")


class ConsentRules(BaseModel):
    """The charter in force as the consent workflow needs it (read by an activity)."""

    charter_version: int
    consent_metrics: list[str]
    context: ConsentContext


class SubjectConsents(BaseModel):
    """A subject's consents in force and the highest nonce they used (from the consent store)."""

    granted: list[str] = Field(default_factory=list)
    last_nonce: int = -1


class RecordConsentInput(BaseModel):
    request: ConsentRequest
    consent_hash: str
    workflow_id: str


class ApplyConsentResult(BaseModel):
    """What putting a consent in force did: the gate's answer and, for a withdrawal, the purge and its time."""

    gate: str
    gate_series_purged: int = 0
    prometheus_series_purged: int = 0
    purge_seconds: float = 0.0


class ConsentReceipt(BaseModel):
    consent_hash: str
    metric: str
    grant: bool
    applied: ApplyConsentResult
    audit_seq: int


class ConsentState(BaseModel):
    subject: str
    granted: list[str]
    last_nonce: int
    messages: int


# -- retention -----------------------------------------------------------------------------------------------

class RetentionPurgeInput(BaseModel):
    """Input of RetentionPurgeWorkflow (run by the ``retention-purge`` schedule; no fields needed)."""

    model_config = ConfigDict(extra="forbid")


class RetentionPurgeResult(BaseModel):
    charter_version: int
    series_by_metric: dict[str, int] = Field(default_factory=dict)
    rows_by_table: dict[str, int] = Field(default_factory=dict)
    bundles_deleted: int = 0
    audit_seq: int = 0


# -- export --------------------------------------------------------------------------------------------------

class ExportInput(BaseModel):
    """Input of DataExportWorkflow (id ``export:<subject>:<nonce>``): the subject's signed request."""

    model_config = ConfigDict(extra="forbid")

    request: ExportRequest
    warn_after: timedelta = Field(timedelta(hours=12), description="The committee is warned if not delivered.")
    escalate_after: timedelta = Field(timedelta(hours=20), description="Escalated to the whole committee.")
    deadline: timedelta = Field(timedelta(hours=24), description="Past it, a charter violation case opens.")

    @model_validator(mode="after")
    def _ordered(self) -> ExportInput:
        if not timedelta(0) < self.warn_after < self.escalate_after < self.deadline <= timedelta(hours=24):
            raise ValueError("need 0 < warn_after < escalate_after < deadline <= 24h (the charter's promise)")
        return self


class BuildExportInput(BaseModel):
    subject: str
    public_key: str
    export_id: str


class ExportDelivery(BaseModel):
    """Where the sealed bundle is: its SHA-256, size, the IPFS CID (if pinned) and the file in the data dir."""

    sha256: str
    size: int
    records: int
    cid: str = ""
    file: str


class ExportState(BaseModel):
    export_id: str
    subject: str
    step: str
    requested_at: datetime
    warned: bool = False
    escalated: bool = False
    violation_case: str = ""
    delivery: ExportDelivery | None = None


class ExportResult(BaseModel):
    export_id: str
    delivery: ExportDelivery
    overdue: bool
    violation_case: str = ""


class CommitteeNotice(BaseModel):
    """A notice to the charter committee (webhook or the local notifications file)."""

    kind: str  # export.warning | export.escalation | case.opened | case.reminder | case.escalated
    workflow_id: str
    message: str
    deadline: datetime | None = None


# -- the bundle ----------------------------------------------------------------------------------------------

class BundleSection(BaseModel):
    """One kind of record held about the subject: what it is, where it lives, how long it is kept."""

    name: str
    what: str
    source: str
    retention: str
    columns: list[str]
    rows: list[dict[str, Any]]


def build_bundle(subject: str, export_id: str, generated_at: datetime, sections: list[BundleSection]) -> bytes:
    """A zip: ``bundle.json`` (every section with its description and rows) and one CSV per section."""
    doc = {"format": FORMAT, "subject": subject.lower(), "export_id": export_id,
           "generated_at": generated_at.isoformat(), "bundle_retention_days": BUNDLE_RETENTION_DAYS,
           "sections": [s.model_dump(mode="json") for s in sections]}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bundle.json", json.dumps(doc, indent=2, sort_keys=True, default=str))
        for s in sections:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=s.columns, extrasaction="ignore")
            writer.writeheader()
            for row in s.rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
            z.writestr(f"{s.name}.csv", text.getvalue())
    return out.getvalue()


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def read_bundle(data: bytes) -> dict[str, Any]:
    """The ``bundle.json`` of a decrypted bundle (CLI and tests)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        doc: dict[str, Any] = json.loads(z.read("bundle.json"))
        doc["csv_files"] = sorted(n for n in z.namelist() if n.endswith(".csv"))
        return doc
