"""Audit activities: append a decision to the tamper-evident log, and verify the log for anchoring.

Failure semantics: an unwritable log raises ``ApplicationError(type=AUDIT_UNAVAILABLE)`` that stays
*retryable*. A database that comes back lets the decision proceed; the caller's retry policy bounds how long
the decision waits, and when it gives up the decision is refused: no decision is ever taken without its entry
(fail closed). A log with a gap (``AUDIT_TAMPERED``) or a payload that is not JSON (``INVALID_INPUT``) cannot
heal by retrying and fails at once.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.store import AuditLog
from westworld.audit import AuditEntryInput, AuditReceipt
from westworld.audit_anchor import LogHead
from westworld.errors import AUDIT_UNAVAILABLE, AuditUnavailable, WestworldError


class AuditActivities:
    """Built with the project's :class:`AuditLog`."""

    def __init__(self, log: AuditLog, observe: Callable[[bool], None] | None = None) -> None:
        self._log = log
        self._observe = observe or (lambda _ok: None)

    @activity.defn(name="append_audit")
    async def append_audit(self, entry: AuditEntryInput) -> AuditReceipt:
        """Append one decision and return its receipt (seq, leaf hash, root and size after it)."""
        try:
            receipt = await self._log.append(entry.kind, entry.subject, entry.payload)
        except AuditUnavailable as err:
            self._observe(False)
            raise ApplicationError(err.message, type=AUDIT_UNAVAILABLE) from err
        except WestworldError as err:
            self._observe(False)
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err
        self._observe(True)
        return receipt

    @activity.defn(name="verify_audit_log")
    async def verify_audit_log(self) -> LogHead:
        """Recompute the whole log; the head to anchor, with every problem found."""
        report = await self._log.verify()
        return LogHead(ok=report.ok, tree_size=report.tree_size, root=report.root,
                       problems=[f"entry {p.seq}: {p.kind}: {p.message}" for p in report.problems])
