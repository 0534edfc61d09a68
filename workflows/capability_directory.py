"""CapabilityDirectoryWorkflow: what a client needs to hand a token to the workers without exposing it — the
workers' public sealing key (westworld/sealed.py) — and the public keys of the peers it asks for.

Public material only: the input names peers, the result carries public keys. The CLI and the SDK's seal helper run
it (id ``capability-directory:<uuid>``) and seal the token locally; the project database stays with the workers.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.agents import CapabilityDirectory, DirectoryRequest


@workflow.defn
class CapabilityDirectoryWorkflow:
    @workflow.run
    async def run(self, request: DirectoryRequest) -> CapabilityDirectory:
        result: CapabilityDirectory = await workflow.execute_activity(
            "capability_directory", request, result_type=CapabilityDirectory,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=5))
        return result
