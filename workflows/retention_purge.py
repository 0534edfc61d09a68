"""RetentionPurgeWorkflow: delete what outlived the charter's retention, and audit the counts.

Run by the ``retention-purge`` schedule (daily, ``workers/stack/schedules.py``). One activity reads the charter in
force and deletes, per metric, the Prometheus samples older than its ``retention_days`` (admin API
``delete_series`` up to the cutoff, then ``clean_tombstones``), the consent messages a later one superseded past
that retention, and the sealed export bundles older than their 7 days (file, IPFS pin and row). The counts per
metric and per table are audited (``charter.retention.purged``); only counts enter history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.charter_data import RetentionPurgeInput, RetentionPurgeResult
    from workflows.audit import append_audit
    from workflows.steps import set_step

PURGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


@workflow.defn
class RetentionPurgeWorkflow:
    @workflow.run
    async def run(self, input: RetentionPurgeInput | None = None) -> RetentionPurgeResult:
        set_step("purging expired data")
        result: RetentionPurgeResult = await workflow.execute_activity(
            "charter_purge_retention", result_type=RetentionPurgeResult,
            start_to_close_timeout=timedelta(minutes=10), retry_policy=PURGE_RETRY)
        set_step("auditing purge")
        receipt = await append_audit("charter.retention.purged", f"charter-v{result.charter_version}",
                                     result.model_dump(mode="json", exclude={"audit_seq"}))
        result.audit_seq = receipt.seq
        return result
