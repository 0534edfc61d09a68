"""ViolationIntakeWorkflow: the one door anonymous violation reports come through (id ``charter-reports``).

The ``submit`` update's validator refuses, without touching history, a report whose hashcash proof of work is
short of the charter's ``reports.pow_bits``, one over the charter's ``reports.per_hour`` (a fixed one-hour window
over everyone: there is nobody to rate-limit by, on purpose), and a receipt already used in this run. The handler
opens the case (a ``ViolationReportWorkflow`` child that outlives the intake) and answers with its id, which the
reporter can also rebuild from their receipt code. The submission holds only sealed and random-looking values;
clients connect with a fixed identity so not even their host name enters history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld.charter_cases import (
        CaseCommittee,
        CaseInput,
        IntakeInput,
        IntakeState,
        ReportSubmission,
        check_pow,
        count_report,
        rate_refusal,
    )
    from westworld.errors import REPORT_REFUSED, ReportRefused
    from workflows.steps import set_step
    from workflows.violation_report import ViolationReportWorkflow

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn
class ViolationIntakeWorkflow:
    @workflow.init
    def __init__(self, input: IntakeInput) -> None:
        self._committee: CaseCommittee | None = None
        self._state = IntakeState()
        self._receipts: set[str] = set()

    @workflow.query
    def state(self) -> IntakeState:
        return self._state

    @workflow.run
    async def run(self, input: IntakeInput) -> None:
        set_step("taking reports")
        self._committee = await workflow.execute_activity(
            "charter_case_committee", result_type=CaseCommittee, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY)
        await workflow.wait_condition(lambda: self._state.accepted >= input.continue_after
                                      or workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(IntakeInput(continue_after=input.continue_after))

    def _check(self, report: ReportSubmission) -> None:
        assert self._committee is not None
        if report.receipt_hash in self._receipts:
            raise ApplicationError("this receipt already opened a case: draw a new receipt code",
                                   type=REPORT_REFUSED, non_retryable=True)
        if why := rate_refusal(self._state, workflow.now(), self._committee.per_hour):
            raise ApplicationError(why, type=REPORT_REFUSED, non_retryable=True)
        try:
            check_pow(report.receipt_hash, report.sealed_report, report.pow_nonce, self._committee.pow_bits)
        except ReportRefused as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from None

    @workflow.update
    async def submit(self, report: ReportSubmission) -> str:
        """Open a case for a sealed report; its case id."""
        await workflow.wait_condition(lambda: self._committee is not None)
        self._check(report)
        self._receipts.add(report.receipt_hash)
        count_report(self._state, workflow.now())
        case = keys.case_id(report.receipt_hash)
        await workflow.start_child_workflow(
            ViolationReportWorkflow.run, CaseInput(
                sealed_report=report.sealed_report, receipt_hash=report.receipt_hash,
                reporter_box_key=report.reporter_box_key, reporter_verify_key=report.reporter_verify_key,
                pow_nonce=report.pow_nonce),
            id=case, parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        return case

    @submit.validator
    def _validate(self, report: ReportSubmission) -> None:
        if self._committee is not None:  # else the first report of update-with-start: the handler checks
            self._check(report)
