"""Models of the tamper-evident audit log (the Merkle math is in ``westworld.merkle``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


def canonical_json(payload: dict[str, Any]) -> str:
    """The exact bytes an entry's leaf hash commits to."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def leaf_data(seq: int, kind: str, subject: str, payload_json: str) -> bytes:
    """What is hashed for entry ``seq``: its position, kind, subject and canonical payload."""
    return canonical_json({"seq": seq, "kind": kind, "subject": subject, "payload": json.loads(payload_json)}).encode()


class AuditEntryInput(BaseModel):
    kind: str = Field(min_length=1, description="e.g. 'vote.result', 'capability.denied'")
    subject: str = Field(description="What the decision is about, e.g. a proposal id.")
    payload: dict[str, Any]


class AuditReceipt(BaseModel):
    seq: int
    leaf_hash: str
    root: str
    tree_size: int


class AuditEntry(BaseModel):
    seq: int
    kind: str
    subject: str
    payload: dict[str, Any]
    leaf_hash: str
    root_after: str
    created_at: datetime


class InclusionProof(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    path: list[str]


class AuditProblem(BaseModel):
    seq: int
    kind: str = Field(description="'changed', 'removed', 'reordered' or 'inconsistent'")
    message: str


class VerifyReport(BaseModel):
    ok: bool
    tree_size: int
    root: str
    problems: list[AuditProblem]
