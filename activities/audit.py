"""Audit activities: append a decision to the tamper-evident log, and verify the log against its trusted heads.

Failure semantics: an unwritable log raises ``AuditUnavailable`` (a ``TransientError``) that stays
*retryable*. A database that comes back lets the decision proceed; the caller's retry policy bounds how long
the decision waits, and when it gives up the decision is refused: no decision is ever taken without its entry
(fail closed). A log with a gap (``AUDIT_TAMPERED``) or a payload that is not JSON (``INVALID_INPUT``) cannot
heal by retrying and fails at once.

Verification checks the log against the heads kept apart from it: the worker's signed heads (when the log has a
signer) and the latest anchor of this log on chain (when the worker has a chain), see :mod:`westworld.audit_trust`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity

from activities.sql.audit_log import AuditLog
from westworld.audit import AuditEntryInput, AuditReceipt, VerifyReport
from westworld.audit_anchor import AnchoredHead, LogHead
from westworld.audit_trust import AuditVerifyInput, AuditVerifyResult
from westworld.errors import WestworldError

FindAnchor = Callable[[str], Awaitable[AnchoredHead | None]]


class AuditActivities:
    """Built with the project's :class:`AuditLog` and, to check the chain anchor, a way to find it by log key."""

    def __init__(
        self, log: AuditLog, observe: Callable[[bool], None] | None = None, find_anchor: FindAnchor | None = None
    ) -> None:
        self._log = log
        self._observe = observe or (lambda _ok: None)
        self._find_anchor = find_anchor

    @activity.defn(name="append_audit")
    async def append_audit(self, entry: AuditEntryInput) -> AuditReceipt:
        """Append one decision and return its receipt (seq, leaf hash, root and size after it)."""
        try:
            receipt = await self._log.append(entry.kind, entry.subject, entry.payload)
        except WestworldError:  # AuditUnavailable retries (the decision waits for the log); the rest is permanent
            self._observe(False)
            raise
        self._observe(True)
        return receipt

    async def _report(self) -> VerifyReport:
        key = self._log.heads.public_key if self._log.heads is not None else ""
        anchor = await self._find_anchor(key) if self._find_anchor is not None and key else None
        report = await self._log.verify(anchor=anchor)
        if self._find_anchor is not None and key and anchor is None:
            report.checked.append("chain anchor: none on chain for this log key yet")
        return report

    @activity.defn(name="verify_audit_log")
    async def verify_audit_log(self) -> LogHead:
        """Recompute the whole log against its trusted heads; the head to anchor, with every problem found."""
        report = await self._report()
        return LogHead(ok=report.ok, tree_size=report.tree_size, root=report.root, log_key=report.log_key,
                       problems=[f"entry {p.seq}: {p.kind}: {p.message}" for p in report.problems])

    @activity.defn(name="audit_report")
    async def audit_report(self, inp: AuditVerifyInput) -> AuditVerifyResult:
        """The full verification report (what `westworld audit verify` prints) and the latest ``inp.last`` entries."""
        report = await self._report()
        entries = await self._log.latest(inp.last) if inp.last else []
        return AuditVerifyResult(report=report, entries=entries)
