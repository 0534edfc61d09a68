"""ReplicaAuditWorkflow: on a schedule, read every replica of every sheltered document back, hash it, and repair a
lost or corrupted one from a good copy (another network, else the worker's cache). Findings are audited.

A network that does not answer is reported (``unreachable``), not repaired: re-uploading to a network that is down
cannot succeed, and the next audit checks it again. Long runs continue-as-new with the documents still to check.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from westworld.shelter import (
        RepairInput,
        ReplicaAuditInput,
        ReplicaAuditResult,
        ReplicaFinding,
        ReplicaRef,
        ReplicaState,
    )
    from workflows.audit import append_audit
    from workflows.steps import set_step

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                    maximum_attempts=5)
REPAIRABLE = (ReplicaState.MISSING, ReplicaState.CORRUPTED)


@workflow.defn
class ReplicaAuditWorkflow:
    """Started by the ``replica-audit`` schedule (daily), or by hand with a ``ReplicaAuditInput``."""

    def __init__(self) -> None:
        self._result = ReplicaAuditResult(documents=0, replicas_checked=0)

    @workflow.query
    def status(self) -> ReplicaAuditResult:
        return self._result

    @workflow.run
    async def run(self, inp: ReplicaAuditInput | None = None) -> ReplicaAuditResult:
        inp = inp or ReplicaAuditInput()
        timeout = inp.activity_timeout
        set_step("listing documents")
        ids = inp.document_ids
        if ids is None:
            ids = await workflow.execute_activity("list_documents", result_type=list[str],
                                                  start_to_close_timeout=timeout, retry_policy=RETRY)
        for position, document_id in enumerate(ids):
            if workflow.info().is_continue_as_new_suggested():
                await self._audit()
                workflow.continue_as_new(inp.model_copy(update={"document_ids": ids[position:]}))
            set_step(f"verifying {document_id}")
            refs = await workflow.execute_activity("verify_replicas", document_id, result_type=list[ReplicaRef],
                                                   start_to_close_timeout=timeout, retry_policy=RETRY)
            self._result.documents += 1
            for ref in refs:
                if ref.state == ReplicaState.NOT_CONFIGURED:
                    continue
                self._result.replicas_checked += 1
                if ref.ok:
                    continue
                finding = ReplicaFinding(document_id=document_id, network=ref.network, state=ref.state,
                                         detail=ref.detail)
                if inp.repair and ref.state in REPAIRABLE:
                    set_step(f"repairing {document_id} on {ref.network.value}")
                    try:
                        fixed = await workflow.execute_activity(
                            "repair_replica", RepairInput(document_id=document_id, network=ref.network),
                            result_type=ReplicaRef, start_to_close_timeout=timeout, retry_policy=RETRY)
                        finding.repaired, finding.detail = fixed.ok, f"{ref.detail}; {fixed.detail}"
                    except ActivityError as err:
                        finding.detail = f"{ref.detail}; repair failed: {err.cause or err}"[:500]
                self._result.findings.append(finding)
        await self._audit()
        set_step("done")
        return self._result

    async def _audit(self) -> None:
        set_step("auditing findings")
        await append_audit("shelter.replica_audit", workflow.info().workflow_id, {
                "documents": self._result.documents, "replicas_checked": self._result.replicas_checked,
                "findings": [f.model_dump(mode="json") for f in self._result.findings]})
