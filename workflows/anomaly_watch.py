"""AnomalyWatchWorkflow: watches every capability decision (read from the decision feed by activity), grades
each agent's coverage, slow creep, action rate and denials, and on a critical finding halts the network by
starting NetworkHaltWorkflow (``halt:<epoch>``, abandoned on close so it outlives this run).

Long-running: it continues as new every ``continue_after_polls`` polls or when Temporal suggests it, carrying
the events still inside the long window. Workflow id ``anomaly-watch`` (`westworld up` starts it).

The ``reconfigure`` update changes thresholds, poll interval and guardians on the running watch (validated,
audited with the old and new settings, carried across continue-as-new) and returns the settings it replaced.
Its validator checks who signed (westworld/authority.py): tightening needs one registered operator, loosening k
guardians, and nothing may be looser than the policy the DAO set (``NetworkPolicy.watch``, read by the
``load_policy`` activity) whoever signs. Each signature covers the watch id and its ``admin_seq`` (so it counts
once) and expires. ``stop`` (k guardians) ends the watch. A start input looser than the policy is tightened to it;
a start input that carries internal state (``carry``) is refused: only continue-as-new hands it over.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from westworld import anomaly, authority, keys
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
        WatchStopRequest,
    )
    from westworld.errors import INJECTED_STATE, INVALID_INPUT, UNAUTHORISED, Unauthorised
    from westworld.policy import NetworkPolicy
    from workflows.audit import append_audit
    from workflows.network_halt import NetworkHaltWorkflow
    from workflows.steps import set_step

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30))
# Runs from before this patch sleep out their poll; newer ones wake early when reconfigured.
WAKE_ON_RECONFIGURE = "watch-wake-on-reconfigure"
# Runs from before this patch took any reconfigure and no policy; newer ones check signatures against the policy.
AUTHORISED_ADMIN = "watch-authorised-admin"
# Runs from before this patch accepted any start stricter than the defaults unsigned.
SIGNED_STRICT_START = "watch-signed-strict-start"


@workflow.defn
class AnomalyWatchWorkflow:
    @workflow.init
    def __init__(self, input: AnomalyWatchInput) -> None:
        self._carry = (input.carry or WatchCarry()).model_copy(deep=True)
        self._input = input
        self._findings: list[anomaly.Finding] = []
        self._reconfigured = False
        self._policy: NetworkPolicy | None = None
        self._signers = authority.AdminSigners()
        self._stopped = False
        if input.carry is not None and workflow.info().continued_run_id is not None:
            # handed over by the previous run (a start input cannot carry it): changes are checked at once
            self._policy, self._signers = input.carry.policy, input.carry.signers or authority.AdminSigners()

    @workflow.run
    async def run(self, input: AnomalyWatchInput) -> None:
        # The settings are read from self._input on each poll: the reconfigure update replaces them.
        c = self._carry
        guarded = workflow.patched(AUTHORISED_ADMIN)
        if guarded:
            await self._start_within_policy(input)
        set_step("watching")
        polls = 0
        while not self._stopped:
            if guarded and polls:
                await self._refresh_signers()
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
                if self._policy is not None:
                    c.policy, c.signers = self._policy, self._signers
                workflow.continue_as_new(self._input.model_copy(update={"carry": c}))
            if len(page.events) < AgentEventsInput().limit:
                await self._pause()
        await workflow.wait_condition(workflow.all_handlers_finished)
        set_step("stopped")

    async def _start_within_policy(self, input: AnomalyWatchInput) -> None:
        if input.carry is not None and workflow.info().continued_run_id is None:
            raise ApplicationError("the watch's carry (feed position, events, halts, admin sequence) is handed over "
                                   "by continue-as-new only, never in a start input", type=INJECTED_STATE,
                                   non_retryable=True)
        policy: NetworkPolicy = await workflow.execute_activity(
            "load_policy", result_type=NetworkPolicy, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        config, poll, k = authority.clamp_to_policy(self._input.config, self._input.poll_interval,
                                                    self._input.guardians_required, policy.watch)
        self._input = self._input.model_copy(update={"config": config, "poll_interval": poll,
                                                     "guardians_required": k})
        await self._refresh_signers()
        if workflow.info().continued_run_id is None and workflow.patched(SIGNED_STRICT_START):
            self._check_strict_start(input, policy)
        self._policy = policy  # from now on changes are checked (policy and signers both known)

    def _check_strict_start(self, input: AnomalyWatchInput, policy: NetworkPolicy) -> None:
        """A start stricter than the defaults (a hair trigger would halt the network on normal work) needs one
        registered operator's signature over the settings asked for; looser ones were already clamped."""
        i = self._input
        default = AnomalyWatchInput()
        base = authority.clamp_to_policy(default.config, default.poll_interval, default.guardians_required,
                                         policy.watch)
        stricter = authority.loosened(i.config, i.poll_interval, i.guardians_required, *base)
        if not stricter:
            return
        wid = workflow.info().workflow_id
        what = f"start {wid} stricter than the defaults ({', '.join(stricter)})"
        if input.signed is None:
            raise ApplicationError(f"{what}: unsigned; needs one registered operator", type=UNAUTHORISED,
                                   non_retryable=True)
        digest = authority.change_digest("watch.start", wid, input.change(), "start", input.signed.expires_at)
        try:
            authority.authorise(what, digest, input.signed, authority.Required(authority.Authority.OPERATOR),
                                self._signers, workflow.now())
        except Unauthorised as err:
            raise ApplicationError(err.message, type=UNAUTHORISED, non_retryable=True) from None

    async def _refresh_signers(self) -> None:
        self._signers = await workflow.execute_activity(
            "admin_signers", result_type=authority.AdminSigners, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK)

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
            id=keys.halt_id(epoch), parent_close_policy=ParentClosePolicy.ABANDON)
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
        new = WatchSettings.model_validate(request.model_dump(include={"config", "poll_interval",
                                                                       "guardians_required"}))
        before = self._settings()
        payload: dict[str, object] = {"reason": request.reason, "before": before.model_dump(mode="json"),
                                      "after": new.model_dump(mode="json")}
        if workflow.patched(AUTHORISED_ADMIN):
            payload.update(self._accepted(request, "watch.reconfigure"))
            self._carry.admin_seq += 1
        await append_audit("watch.reconfigure", workflow.info().workflow_id, payload)
        self._input = self._input.model_copy(update={
            "config": new.config, "poll_interval": new.poll_interval, "guardians_required": new.guardians_required})
        self._reconfigured = True
        return before

    @reconfigure.validator
    def _validate(self, request: WatchConfigRequest) -> None:
        if problems := anomaly.config_problems(request.config, request.poll_interval):
            raise ApplicationError("watch settings refused: " + "; ".join(problems), type=INVALID_INPUT,
                                   non_retryable=True)
        if self._policy is None:
            raise ApplicationError("watch settings refused: this run has not loaded the network policy (yet)",
                                   type=UNAUTHORISED, non_retryable=True)
        if looser := authority.looser_than_policy(request.config, request.poll_interval, request.guardians_required,
                                                  self._policy.watch):
            raise ApplicationError("watch settings refused: looser than the network policy, whoever signs: "
                                   + "; ".join(looser), type=UNAUTHORISED, non_retryable=True)
        i = self._input
        loosens = authority.loosened(i.config, i.poll_interval, i.guardians_required, request.config,
                                     request.poll_interval, request.guardians_required)
        what = f"reconfigure {workflow.info().workflow_id}" + (f" (loosens {', '.join(loosens)})" if loosens else "")
        self._check(request, "watch.reconfigure", what,
                    authority.watch_authority(loosens, self._policy, i.guardians_required))

    def _check(self, request: WatchConfigRequest | WatchStopRequest, action: str, what: str,
               required: authority.Required) -> list[str]:
        """The signers' ids if ``request`` is signed by ``required`` over this change at the current sequence."""
        if request.seq != self._carry.admin_seq:
            raise ApplicationError(f"{what}: signed for sequence {request.seq}, the watch is at "
                                   f"{self._carry.admin_seq} (a signature counts once)", type=UNAUTHORISED,
                                   non_retryable=True)
        if request.signed is None:
            raise ApplicationError(f"{what}: unsigned; needs {required.describe()}", type=UNAUTHORISED,
                                   non_retryable=True)
        digest = authority.change_digest(action, workflow.info().workflow_id, request.change(), str(request.seq),
                                         request.signed.expires_at)
        try:
            return authority.authorise(what, digest, request.signed, required, self._signers, workflow.now())
        except Unauthorised as err:
            raise ApplicationError(err.message, type=UNAUTHORISED, non_retryable=True) from None

    def _accepted(self, request: WatchConfigRequest | WatchStopRequest, action: str) -> dict[str, object]:
        """What the audit records of an accepted signed change: who signed, at which sequence, until when."""
        by_key = {**{k: i for i, k in self._signers.operators.items()},
                  **{k: i for i, k in self._signers.guardians.items()}}
        signed = request.signed.signatures if request.signed else []
        return {"seq": request.seq, "signed_by": sorted(by_key.get(s.signer, s.signer) for s in signed),
                "expires_at": request.signed.expires_at.isoformat() if request.signed else None, "action": action}

    @workflow.update
    async def stop(self, request: WatchStopRequest) -> int:
        """End the watch (k guardians sign); returns the polls this watch made over all its runs."""
        payload = {"reason": request.reason, **self._accepted(request, "watch.stop")}
        self._carry.admin_seq += 1
        await append_audit("watch.stop", workflow.info().workflow_id, payload)
        self._stopped = self._reconfigured = True
        return self._carry.polls

    @stop.validator
    def _validate_stop(self, request: WatchStopRequest) -> None:
        if self._policy is None:
            raise ApplicationError("stop refused: this run has not loaded the network policy (yet)",
                                   type=UNAUTHORISED, non_retryable=True)
        k = authority.guardians_k(self._policy, self._input.guardians_required)
        self._check(request, "watch.stop", f"stop {workflow.info().workflow_id}",
                    authority.Required(authority.Authority.GUARDIANS, k))

    @workflow.query
    def status(self) -> AnomalyWatchStatus:
        return AnomalyWatchStatus(after_seq=self._carry.after_seq, events=len(self._carry.events),
                                  findings=self._findings, halts=list(self._carry.halts), settings=self._settings(),
                                  admin_seq=self._carry.admin_seq, protected=self._policy is not None)
