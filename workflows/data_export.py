"""DataExportWorkflow: everything held about a user, delivered to them within 24 hours, or a charter violation.

The user signs an ``ExportRequest`` (EIP-712, :mod:`westworld.charter_rights`) naming their X25519 public key; the
workflow (id ``export:<subject>:<nonce>``) checks the signature against the chain and Charter contract in force
and starts ``charter_build_export``: it gathers the votes cast, consents, shelter requests, audit entries naming
the user and the metric series of their pseudonym, builds a zip of JSON and CSV saying what each item is and how
long it is kept, seals it to the user's key (a libsodium sealed box) and delivers it (the data dir for download,
and IPFS when it answers). Only the bundle's digest, size, CID and file name come back: the records never enter
history.

The promise is enforced by durable timers, not by hope: not delivered at ``warn_after`` (12 h) the committee is
warned, at ``escalate_after`` (20 h) escalated to, and at ``deadline`` (24 h) a charter violation case opens on its
own (a ``ViolationReportWorkflow`` child, sealed to the committee, that outlives this workflow). Building goes on
(retried while Prometheus, the store or the disk do not answer) until the bundle is delivered. Every step audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld.charter_data import (
        BuildExportInput,
        CommitteeNotice,
        ConsentRules,
        ExportDelivery,
        ExportInput,
        ExportResult,
        ExportState,
    )
    from westworld.charter_rights import verify_export
    from westworld.errors import ExportRefused
    from workflows.audit import append_audit
    from workflows.steps import set_step
    from workflows.violation_report import open_system_case, seal_for_committee

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
BUILD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


@workflow.defn
class DataExportWorkflow:
    @workflow.init
    def __init__(self, input: ExportInput) -> None:
        self._state = ExportState(export_id=workflow.info().workflow_id, subject=input.request.subject.lower(),
                                  step="checking request", requested_at=workflow.now())

    @workflow.query
    def state(self) -> ExportState:
        return self._state

    def _step(self, step: str) -> None:
        self._state.step = step
        set_step(step)

    @workflow.run
    async def run(self, input: ExportInput) -> ExportResult:
        req, wid = input.request, workflow.info().workflow_id
        if wid != keys.export_id(req.subject, req.nonce):
            raise ApplicationError(f"an export of {req.subject.lower()} with nonce {req.nonce} runs as "
                                   f"{keys.export_id(req.subject, req.nonce)!r}, not {wid!r}",
                                   type=ExportRefused.type, non_retryable=True)
        self._step("checking request")
        rules = await workflow.execute_activity("charter_consent_rules", result_type=ConsentRules,
                                                start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY)
        try:
            verify_export(req, rules.context, int(workflow.now().timestamp()))
        except ExportRefused as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from None
        started = workflow.now()
        await append_audit("charter.export.requested", self._state.subject, {
            "export_id": wid, "public_key": req.public_key, "deadline": (started + input.deadline).isoformat()})
        self._step("building export")
        build = workflow.start_activity(
            "charter_build_export", BuildExportInput(subject=self._state.subject, public_key=req.public_key,
                                                     export_id=wid),
            result_type=ExportDelivery, start_to_close_timeout=timedelta(minutes=30), retry_policy=BUILD_RETRY)
        stages = ((input.warn_after, self._warn), (input.escalate_after, self._escalate),
                  (input.deadline, self._violation))
        for at, fire in stages:
            try:
                await workflow.wait_condition(build.done, timeout=at - (workflow.now() - started))
                break
            except TimeoutError:
                await fire(started + input.deadline)
        delivery = await build
        self._state.delivery = delivery
        self._step("delivered")
        overdue = workflow.now() - started > input.deadline
        await append_audit("charter.export.delivered", self._state.subject, {
            "export_id": wid, "sha256": delivery.sha256, "size": delivery.size, "records": delivery.records,
            "cid": delivery.cid, "seconds": (workflow.now() - started).total_seconds(), "overdue": overdue})
        return ExportResult(export_id=wid, delivery=delivery, overdue=overdue,
                            violation_case=self._state.violation_case)

    async def _notify(self, kind: str, message: str, deadline: datetime) -> None:
        await workflow.execute_activity(
            "charter_notify_committee", CommitteeNotice(kind=kind, workflow_id=workflow.info().workflow_id,
                                                        message=message, deadline=deadline),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFY_RETRY)

    async def _warn(self, deadline: datetime) -> None:
        self._state.warned = True
        self._step("export late: committee warned")
        await self._notify("export.warning", "a data export is not delivered yet", deadline)
        await append_audit("charter.export.warning", self._state.subject, {"export_id": self._state.export_id})

    async def _escalate(self, deadline: datetime) -> None:
        self._state.escalated = True
        self._step("export late: escalated")
        await self._notify("export.escalation", "a data export is still not delivered: act before the 24 h "
                           "deadline", deadline)
        await append_audit("charter.export.escalated", self._state.subject, {"export_id": self._state.export_id})

    async def _violation(self, deadline: datetime) -> None:
        """The 24 h promise is broken: open a case sealed to the committee (it names the export, so the user)."""
        wid = workflow.info().workflow_id
        self._step("export overdue: violation case opened")
        sealed = await seal_for_committee(f"Data export {wid} was not delivered within its deadline ({deadline}).")
        case = await open_system_case(sealed, wid, workflow.info().run_id)
        self._state.violation_case = case
        await append_audit("charter.export.overdue", self._state.subject, {"export_id": wid, "case": case})
