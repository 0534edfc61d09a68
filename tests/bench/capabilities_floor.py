"""Floor workflows for the capabilities benchmark: one bare activity call, and one capability check activity."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.agents import CapabilityCheckInput, CapabilityCheckOutcome
    from westworld.policy import NetworkPolicy


@activity.defn(name="bench_noop")
async def bench_noop(value: str) -> str:
    return value


@activity.defn(name="load_policy")
async def bench_policy() -> NetworkPolicy:
    """The shipped policy's defaults (the benchmark has no chain to check its hash against)."""
    return NetworkPolicy()


@workflow.defn
class BareActivityWorkflow:
    """The floor: a workflow that calls one no-op activity."""

    @workflow.run
    async def run(self, value: str) -> str:
        result: str = await workflow.execute_activity(
            "bench_noop", value, result_type=str, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1))
        return result


@workflow.defn
class CheckOnlyWorkflow:
    """The same shape, calling the full capability check activity instead."""

    @workflow.run
    async def run(self, inp: CapabilityCheckInput) -> bool:
        out: CapabilityCheckOutcome = await workflow.execute_activity(
            "check_capability", inp, result_type=CapabilityCheckOutcome, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1))
        return out.result.allowed
