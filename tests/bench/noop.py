"""The floor: a workflow whose update does nothing, on the same server, worker and concurrency as the votes."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn
class NoopUpdateWorkflow:
    def __init__(self) -> None:
        self._done = False
        self._count = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self._done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._count

    @workflow.update
    async def touch(self, _: str) -> int:
        self._count += 1
        return self._count

    @touch.validator
    def _check(self, _: str) -> None:
        if not _:
            raise ValueError("empty")

    @workflow.signal
    def finish(self) -> None:
        self._done = True
