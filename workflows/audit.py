"""Appending a decision to the audit log: the one activity call, and the one retry policy, every workflow uses.

An unwritable log is a retryable ``AuditUnavailable``: the decision waits for the log (retried, at most a minute
apart) and is never taken without its entry. A log that cannot take the entry at all (``AuditTampered``, a payload
that is not JSON) fails at once, non-retryable. The activity name, arguments and timeout are what saved histories
recorded; they stay as they are so those histories replay.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.audit import AuditEntryInput, AuditReceipt

AUDIT_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
AUDIT_TIMEOUT = timedelta(seconds=30)


async def append_audit(kind: str, subject: str, payload: dict[str, Any]) -> AuditReceipt:
    """Append one decision (``kind`` such as ``vote.result``, about ``subject``); its receipt (seq, root)."""
    receipt: AuditReceipt = await workflow.execute_activity(
        "append_audit", AuditEntryInput(kind=kind, subject=subject, payload=payload), result_type=AuditReceipt,
        start_to_close_timeout=AUDIT_TIMEOUT, retry_policy=AUDIT_RETRY)
    return receipt
