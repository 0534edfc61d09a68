"""AnomalyWatchWorkflow: watches every capability decision (read from the decision feed by activity), grades
each agent's coverage, slow creep, action rate and denials, and on a critical finding halts the network by
starting NetworkHaltWorkflow (``halt:<epoch>``, abandoned on close so it outlives this run).

Long-running: it continues as new every ``continue_after_polls`` polls or when Temporal suggests it, carrying
the events still inside the long window. Workflow id ``anomaly-watch`` (`westworld up` starts it).

The ``reconfigure`` update changes thresholds, poll interval and guardians on the running watch (validated,
audited with the old and new settings, carried across continue-as-new) and returns the settings it replaced.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
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
        WatchConfigRequest,
        WatchSettings,
    )
    from westworld.audit import AuditEntryInput, AuditReceipt
    from westworld.errors import INVALID_INPUT
    from workflows.network_halt import NetworkHaltWorkflow
    from workflows.steps import set_step

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30))
AUDIT_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
# Runs from before this patch sleep out their poll; newer ones wake early when reconfigured.
WAKE_ON_RECONFIGURE = "watch-wake-on-reconfigure"


@workflow.defn
class AnomalyWatchWorkflow:
    @workflow.init
    def __init__(self, input: AnomalyWatchInput) -> None:
        self._carry = (input.carry or WatchCarry()).model_copy(deep=True)
        self._input = input
        self._findings: list[anomaly.Finding] = []
        self._reconfigured = False

    @workflow.run
    async def run(self, input: AnomalyWatchInput) -> None:
        # The settings are read from self._input on each poll: the reconfigure update replaces them.
        c = self._carry
        set_step("watching")
        polls = 0
        while True:
            page = await workflow.execute_activity(
                "agent_events", AgentEventsInput(after_seq=c.after_seq), result_type=AgentEventsPage,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
            now = workflow.now()
            config = self._input.config
            c.events = anomaly.prune([*c.events, *page.events], now, config)
            c.after_seq = page.last_seq
            self._findings = anomaly.evaluate(c.events, now, page.live_nodes, config)
            critical = [f for f in self._findings if f.severity is anomaly.Severity.CRITICAL]
            if critical:
                await self._halt(self._input, critical, page.last_seq)
            polls += 1
            c.polls += 1
            if polls >= input.continue_after_polls or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._input.model_copy(update={"carry": c}))
            if len(page.events) < AgentEventsInput().limit:
                await self._pause()

    async def _pause(self) -> None:
        if not workflow.patched(WAKE_ON_RECONFIGURE):
            await workflow.sleep(self._input.poll_interval)
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._reconfigured, timeout=self._input.poll_interval)
        self._reconfigured = False

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

    def _settings(self) -> WatchSettings:
        i = self._input
        return WatchSettings(config=i.config, poll_interval=i.poll_interval, guardians_required=i.guardians_required)

    @workflow.update
    async def reconfigure(self, request: WatchConfigRequest) -> WatchSettings:
        """New thresholds, poll interval and guardians from the next poll on (which comes at once); returns the
        settings they replace, so the caller can put them back."""
        new = WatchSettings.model_validate(request.model_dump(exclude={"reason"}))
        before = self._settings()
        await workflow.execute_activity(
            "append_audit", AuditEntryInput(kind="watch.reconfigure", subject=workflow.info().workflow_id, payload={
                "reason": request.reason, "before": before.model_dump(mode="json"),
                "after": new.model_dump(mode="json")}),
            result_type=AuditReceipt, start_to_close_timeout=timedelta(seconds=30), retry_policy=AUDIT_RETRY)
        self._input = self._input.model_copy(update={
            "config": new.config, "poll_interval": new.poll_interval, "guardians_required": new.guardians_required})
        self._reconfigured = True
        return before

    @reconfigure.validator
    def _validate(self, request: WatchConfigRequest) -> None:
        if problems := anomaly.config_problems(request.config, request.poll_interval):
            raise ApplicationError("watch settings refused: " + "; ".join(problems), type=INVALID_INPUT,
                                   non_retryable=True)

    @workflow.query
    def status(self) -> AnomalyWatchStatus:
        return AnomalyWatchStatus(after_seq=self._carry.after_seq, events=len(self._carry.events),
                                  findings=self._findings, halts=list(self._carry.halts), settings=self._settings())
