"""AuditVerifyWorkflow: `westworld audit verify | show` as a client of Temporal.

The CLI never opens the project database or the worker's keys: it starts this short workflow (id
``audit-verify-<uuid>``), whose one activity recomputes the log in the worker against its signed heads and the
chain anchor and returns the report (and the latest entries asked for). The CLI then checks the report's head
against the anchor it reads from the chain itself. Read-only: it appends nothing.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.audit_trust import AuditVerifyInput, AuditVerifyResult
    from workflows.steps import set_step

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                    maximum_attempts=3)


@workflow.defn
class AuditVerifyWorkflow:
    """Started by `westworld audit verify` and `westworld audit show`."""

    @workflow.run
    async def run(self, inp: AuditVerifyInput) -> AuditVerifyResult:
        set_step("verifying audit log")
        result: AuditVerifyResult = await workflow.execute_activity(
            "audit_report", inp, result_type=AuditVerifyResult, start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RETRY,
        )
        set_step("done")
        return result
