"""AnomalyWatchWorkflow: watches every capability decision (read from the decision feed by activity), grades
each agent's coverage, slow creep, action rate and denials, and on a critical finding halts the network by
starting NetworkHaltWorkflow (``halt:<epoch>``, abandoned on close so it outlives this run).

Long-running: it continues as new every ``continue_after_polls`` polls or when Temporal suggests it, carrying
the events still inside the long window. Workflow id ``anomaly-watch``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from westworld import anomaly
    from westworld.agents import (
        AgentEventsInput,
        AgentEventsPage,
        AnomalyWatchInput,
        AnomalyWatchStatus,
        HaltRequest,
        NetworkHaltInput,
        WatchCarry,
    )
    from workflows.network_halt import NetworkHaltWorkflow
    from workflows.steps import set_step

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30))


@workflow.defn
class AnomalyWatchWorkflow:
    @workflow.init
    def __init__(self, input: AnomalyWatchInput) -> None:
        self._carry = (input.carry or WatchCarry()).model_copy(deep=True)
        self._findings: list[anomaly.Finding] = []

    @workflow.run
    async def run(self, input: AnomalyWatchInput) -> None:
        c = self._carry
        set_step("watching")
        polls = 0
        while True:
            page = await workflow.execute_activity(
                "agent_events", AgentEventsInput(after_seq=c.after_seq), result_type=AgentEventsPage,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
            now = workflow.now()
            c.events = anomaly.prune([*c.events, *page.events], now, input.config)
            c.after_seq = page.last_seq
            self._findings = anomaly.evaluate(c.events, now, page.live_nodes, input.config)
            critical = [f for f in self._findings if f.severity is anomaly.Severity.CRITICAL]
            if critical:
                await self._halt(input, critical, page.last_seq)
            polls += 1
            c.polls += 1
            if polls >= input.continue_after_polls or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(input.model_copy(update={"carry": c}))
            if len(page.events) < AgentEventsInput().limit:
                await workflow.sleep(input.poll_interval)

    async def _halt(self, input: AnomalyWatchInput, critical: list[anomaly.Finding], seq: int) -> None:
        reason = "; ".join(r for f in critical for r in f.reasons)
        set_step("halting the network")
        epoch: int = await workflow.execute_activity(
            "allocate_halt_epoch", HaltRequest(request_key=f"{workflow.info().workflow_id}:{seq}", reason=reason),
            result_type=int, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        await workflow.start_child_workflow(
            NetworkHaltWorkflow.run,
            NetworkHaltInput(epoch=epoch, reason=reason, findings=critical,
                             guardians_required=input.guardians_required),
            id=f"halt:{epoch}", parent_close_policy=ParentClosePolicy.ABANDON)
        self._carry.halts.append(epoch)
        # The events that caused this halt are accounted for; after the resume only new behaviour counts.
        self._carry.events = []
        set_step("watching")

    @workflow.query
    def status(self) -> AnomalyWatchStatus:
        return AnomalyWatchStatus(after_seq=self._carry.after_seq, events=len(self._carry.events),
                                  findings=self._findings, halts=list(self._carry.halts))
