"""AuditAnchorWorkflow: on a schedule, verify the audit log and anchor its root on chain.

An anchored (tree size, root) is the trusted earlier head later verifications check consistency against, so
rewriting the database cannot go unnoticed once a root is on chain. A failed verification fails the workflow
loudly (it shows in `westworld stuck` and the UI) instead of anchoring a tampered root.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.audit_anchor import AnchorResult, LogHead
    from westworld.errors import AUDIT_TAMPERED
    from workflows.audit import append_audit
    from workflows.steps import set_step

RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                    maximum_attempts=10)


@workflow.defn
class AuditAnchorWorkflow:
    """Started by the ``audit-anchor`` schedule (workflow id ``audit-anchor-<time>``)."""

    @workflow.run
    async def run(self) -> AnchorResult:
        set_step("verifying audit log")
        head = await workflow.execute_activity(
            "verify_audit_log", result_type=LogHead, start_to_close_timeout=timedelta(minutes=10), retry_policy=RETRY
        )
        if not head.ok:
            raise ApplicationError(f"audit log failed verification: {head.problems}", type=AUDIT_TAMPERED,
                                   non_retryable=True)
        if head.tree_size == 0:
            set_step("done")
            return AnchorResult(tree_size=0, root=head.root, tx_hash=None, audit_seq=None)
        set_step("anchoring root on chain")
        tx_hash: str = await workflow.execute_activity(
            "anchor_root", head, result_type=str, start_to_close_timeout=timedelta(minutes=2), retry_policy=RETRY
        )
        set_step("recording anchor")
        receipt = await append_audit("audit.anchor", str(head.tree_size),
                                     {"tree_size": head.tree_size, "root": head.root, "tx": tx_hash})
        set_step("done")
        return AnchorResult(tree_size=head.tree_size, root=head.root, tx_hash=tx_hash, audit_seq=receipt.seq)
