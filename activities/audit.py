"""Audit activities: append a decision to the tamper-evident log; verify the log and anchor its root."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.store import AuditLog
from westworld.audit import AuditEntryInput, AuditReceipt
from westworld.audit_anchor import LogHead
from westworld.errors import AUDIT_UNAVAILABLE, AuditUnavailable


class AuditActivities:
    """Built with the project's ``AuditLog``."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    @activity.defn(name="append_audit")
    async def append_audit(self, entry: AuditEntryInput) -> AuditReceipt:
        """Append one decision. An unwritable log fails the activity (retryable: a database that comes back lets
        the decision proceed; the caller's retry policy bounds how long the decision waits, and it is never
        taken without its audit entry)."""
        try:
            return await self._log.append(entry.kind, entry.subject, entry.payload)
        except AuditUnavailable as err:
            raise ApplicationError(err.message, type=AUDIT_UNAVAILABLE) from err

    @activity.defn(name="verify_audit_log")
    async def verify_audit_log(self) -> LogHead:
        report = await self._log.verify()
        return LogHead(ok=report.ok, tree_size=report.tree_size, root=report.root,
                       problems=[f"entry {p.seq}: {p.kind}: {p.message}" for p in report.problems])
