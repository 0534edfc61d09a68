"""The floor for a canary step: a workflow making bare Temporal activity calls in a row (no-op and mesh action)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field

    from westworld.sandbox import MeshActionInput, MeshActionResult


class FloorInput(BaseModel):
    calls: int
    actions: list[MeshActionInput] = Field(default_factory=list)


class FloorResult(BaseModel):
    noop_s: float = Field(description="Seconds per bare no-op activity call.")
    mesh_action_s: float = Field(description="Seconds per bare execute_mesh_action call.")


@activity.defn(name="bench_noop")
async def bench_noop(_: str) -> str:
    return _


@workflow.defn
class ActivityFloorWorkflow:
    """Calls ``bench_noop`` n times, then ``execute_mesh_action`` once per given action; returns seconds per call
    of each kind (workflow time)."""

    @workflow.run
    async def run(self, inp: FloorInput) -> FloorResult:
        n, actions = inp.calls, inp.actions
        retry = RetryPolicy(maximum_attempts=1)
        t0 = workflow.now()
        for i in range(n):
            await workflow.execute_activity("bench_noop", str(i), result_type=str,
                                            start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
        t1 = workflow.now()
        for a in actions:
            await workflow.execute_activity("execute_mesh_action", a, result_type=MeshActionResult,
                                            start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
        t2 = workflow.now()
        return FloorResult(noop_s=(t1 - t0).total_seconds() / max(n, 1),
                           mesh_action_s=(t2 - t1).total_seconds() / max(len(actions), 1))
