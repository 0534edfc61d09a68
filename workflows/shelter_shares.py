"""What the shelter's access and rotation workflows share: collecting guardians' shares, audit, activity options.

``ShareBox`` holds the key epoch a workflow collects for and the submissions it accepted. Update validators call
:meth:`ShareBox.check` (which raises a typed ``ApplicationError`` naming the reason) and the handlers
:meth:`ShareBox.accept`; the boxes are sealed to the requester (or a rotation key), so history holds no clear share.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.audit import AuditReceipt
    from westworld.errors import INVALID_INPUT, SHARE_WINDOW_CLOSED, ShareRejected
    from westworld.notify import GuardianNotice
    from westworld.shelter import DocumentRecord, KeyEpoch
    from westworld.shelter_access import ShareSubmission, ShareTask, check_submission
    from workflows.audit import append_audit

STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                           maximum_attempts=5)


class ShareBox:
    """The submissions accepted for one request, checked against one key epoch."""

    def __init__(self, workflow_id: str, request_id: str) -> None:
        self.workflow_id = workflow_id
        self.request_id = request_id
        self.epoch: KeyEpoch | None = None
        self.accepted: dict[str, ShareSubmission] = {}

    @property
    def needed(self) -> int:
        return self.epoch.threshold if self.epoch else 0

    @property
    def full(self) -> bool:
        return self.epoch is not None and len(self.accepted) >= self.epoch.threshold

    def waiting_for(self) -> list[str]:
        if self.epoch is None:
            return []
        return [g.id for g in self.epoch.guardians if g.id not in self.accepted]

    def check(self, sub: ShareSubmission, deadline: datetime | None) -> None:
        """For update validators: raises the typed refusal; mutates nothing (validators do not replay)."""
        if self.epoch is None:
            raise ApplicationError(f"{self.request_id}: the key epoch is not loaded yet, try again shortly",
                                   type=SHARE_WINDOW_CLOSED, non_retryable=True)
        try:
            check_submission(sub, self.epoch, self.workflow_id, self.request_id, self.accepted.keys(),
                             workflow.now(), deadline)
        except ShareRejected as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err

    def accept(self, sub: ShareSubmission) -> int:
        self.accepted[sub.guardian_id] = sub
        return len(self.accepted)

    def progress(self) -> str:
        return f"{len(self.accepted)}/{self.needed}"

    def task(self, guardian_id: str, seal_to: str) -> ShareTask | None:
        share = self.epoch.share_of(guardian_id) if self.epoch else None
        if self.epoch is None or share is None:
            return None
        return ShareTask(workflow_id=self.workflow_id, request_id=self.request_id, guardian_id=guardian_id,
                         epoch=self.epoch.epoch, encrypted_share=share, seal_to=seal_to, salt=self.epoch.salt,
                         submitted=guardian_id in self.accepted)


async def load_epoch(epoch: int | None = None) -> KeyEpoch:
    """The current key epoch (or a given one)."""
    found: KeyEpoch
    if epoch is None:
        found = await workflow.execute_activity(
            "current_key_epoch", result_type=KeyEpoch, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
    else:
        found = await workflow.execute_activity(
            "get_key_epoch", epoch, result_type=KeyEpoch, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
    return found


async def epoch_for(document: DocumentRecord) -> KeyEpoch:
    """The live epoch holding the document's master key: the epoch it was wrapped under, or, once that epoch was
    retired by a rotation that kept the key, the current epoch (same master public key)."""
    wrapped_under = await load_epoch(document.key_epoch)
    if not wrapped_under.retired:
        return wrapped_under
    current = await load_epoch()
    if current.master_public_key != wrapped_under.master_public_key:
        raise ApplicationError(
            f"document {document.document_id} is wrapped to retired epoch {wrapped_under.epoch}, whose master key "
            f"the current epoch {current.epoch} does not hold (it was not re-wrapped)", type=INVALID_INPUT,
            non_retryable=True)
    return current


async def load_document(document_id: str) -> DocumentRecord:
    """The document's index record (fails non-retryably if no such document is sheltered)."""
    record: DocumentRecord = await workflow.execute_activity(
        "get_document", document_id, result_type=DocumentRecord, start_to_close_timeout=timedelta(seconds=30),
        retry_policy=STORE_RETRY,
    )
    return record


def refusal(err: ActivityError | ApplicationError) -> str:
    """The message of a permanent failure (an activity's cause, or the error itself)."""
    cause = err.cause if isinstance(err, ActivityError) and err.cause else err
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


async def notify(notice: GuardianNotice) -> bool:
    """Send one notice; an unreachable webhook (after the retries) is logged, never fails the request."""
    try:
        await workflow.execute_activity(
            "notify_guardians", notice, result_type=int, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_RETRY,
        )
    except ActivityError as err:
        workflow.logger.warning("notice %d for %s not delivered: %s", notice.reminder, notice.request_id,
                                err.cause or err)
        return False
    return True


async def audit(kind: str, subject: str, payload: dict[str, Any]) -> int:
    receipt: AuditReceipt = await append_audit(kind, subject, payload)
    return receipt.seq
