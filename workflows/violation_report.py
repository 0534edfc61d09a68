"""ViolationReportWorkflow: one charter violation case, acknowledged within 24 h and decided within 72 h.

A case is opened by the intake (an anonymous report, ``workflows/violation_intake.py``) or by a workflow that
found a violation itself (an export past its 24 h: then the parent must be a ``DataExportWorkflow``, which the
server records and no caller can forge). Its id is ``case:<receipt hash>``; the report is a sealed box only the
committee opens; the reporter is known by nothing but two public keys derived from their receipt code.

Committee members act through updates carrying EIP-712 ``CaseAction`` signatures; the validators check that the
signer sits on the committee of the charter in force (never a list from the input) and refuse a forged, foreign
or repeated signature without touching history:

* ``claim`` acknowledges the case (the first claim ends the 24 h acknowledgement clock);
* ``note`` adds a note sealed to the committee, or a question sealed to the reporter's key;
* ``decide`` records a member's signed outcome and summary; k distinct members signing the same pair decide.

The reporter answers with ``answer`` (sealed to the committee, signed with the receipt's Ed25519 key). Reminders go
to the committee every ``remind_every``; an unacknowledged case at 24 h is audited and escalated to; at 72 h an
undecided case goes to a DAO vote (a ``DaoVoteWorkflow`` child) whose result decides it. The outcome is audited
and published redacted (the ``charter_cases`` row: outcome, summary, who decided, when; nothing of the report).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld.charter_cases import (
        CaseCommittee,
        CaseDecision,
        CaseEntry,
        CaseInput,
        CaseNote,
        CaseResult,
        CaseSource,
        CaseState,
        ReporterAnswer,
        check_pow,
        verify_answer,
    )
    from westworld.charter_consent import ConsentContext
    from westworld.charter_data import CommitteeNotice
    from westworld.charter_rights import (
        CaseAction,
        decided,
        refuse_repeat,
        sha256_hex,
        verify_case_action,
    )
    from westworld.errors import CASE_REFUSED, REPORT_REFUSED, CaseRefused, ReportRefused
    from westworld.vote import DaoVoteInput, DaoVoteResult, Proposal
    from workflows.audit import append_audit
    from workflows.dao_vote import DaoVoteWorkflow
    from workflows.steps import set_step

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))
SYSTEM_PARENTS = ("export:",)  # workflows that may open a case without a reporter's proof of work (by id prefix)
SYSTEM_PARENT_IDS = (keys.CHARTER_SYNC_ID,)  # ... and by exact id: the standing charter sync (forbidden metrics)


def _typed(err: CaseRefused | ReportRefused) -> ApplicationError:
    return ApplicationError(err.message, type=err.type, non_retryable=True)


@workflow.defn
class ViolationReportWorkflow:
    @workflow.init
    def __init__(self, input: CaseInput) -> None:
        now = workflow.now()
        self._input = input
        self._committee: CaseCommittee | None = None
        self._ctx: ConsentContext | None = None
        self._state = CaseState(case_id=workflow.info().workflow_id, source=input.source, step="opening",
                                opened_at=now, deadline=now + input.decide_within, threshold=0,
                                reporter_box_key=input.reporter_box_key)
        self._summaries: dict[str, str] = {}
        self._decided: tuple[str, str] | None = None

    @workflow.query
    def status(self) -> CaseState:
        return self._state

    def _step(self, step: str) -> None:
        self._state.step = step
        set_step(step)

    # -- the case --------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: CaseInput) -> CaseResult:
        wid = workflow.info().workflow_id
        if wid != keys.case_id(input.receipt_hash):
            raise ApplicationError(f"a case with this receipt runs as {keys.case_id(input.receipt_hash)!r}",
                                   type=REPORT_REFUSED, non_retryable=True)
        committee = await workflow.execute_activity(
            "charter_case_committee", result_type=CaseCommittee, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY)
        self._check_opening(input, committee)
        self._ctx = ConsentContext(chain_id=committee.chain_id, charter_address=committee.charter_address)
        self._state.threshold = committee.threshold
        self._committee = committee
        await append_audit("charter.case.opened", wid, {"source": input.source.value,
                                                        "deadline": self._state.deadline.isoformat()})
        await self._notify("case.opened", "a charter violation case was opened")
        self._step("awaiting acknowledgement")
        ack_by = self._state.opened_at + input.acknowledge_within
        await self._wait(lambda: self._state.acknowledged_at is not None or self._decided is not None, ack_by)
        if self._state.acknowledged_at is None and self._decided is None:
            await append_audit("charter.case.unacknowledged", wid, {"within": str(input.acknowledge_within)})
            await self._notify("case.escalated", "a case was not acknowledged within its 24 h")
        self._step("awaiting decision")
        await self._wait(lambda: self._decided is not None, self._state.deadline)
        if self._decided is not None:
            outcome, digest = self._decided
            self._state.outcome, self._state.summary = outcome, self._summaries[digest]
            self._state.decided_by = sorted(m for m, pair in self._state.decision_signatures.items()
                                            if pair == self._decided)
        else:
            await self._escalate()
        return await self._close()

    def _check_opening(self, input: CaseInput, committee: CaseCommittee) -> None:
        parent = workflow.info().parent  # recorded by the server: no caller can claim one
        if input.source is CaseSource.REPORTER and (parent is None or parent.workflow_id != keys.REPORT_INTAKE_ID):
            raise ApplicationError(f"a reported case is opened only through the intake ({keys.REPORT_INTAKE_ID}: "
                                   "`westworld charter report submit`), which holds the rate limit and the windows",
                                   type=REPORT_REFUSED, non_retryable=True)
        if input.source is CaseSource.SYSTEM:
            if parent is None or not (parent.workflow_id.startswith(SYSTEM_PARENTS)
                                      or parent.workflow_id in SYSTEM_PARENT_IDS):
                raise ApplicationError("a system case is opened only by a workflow that found a violation (an "
                                       "export, the charter sync), never by a caller", type=REPORT_REFUSED,
                                       non_retryable=True)
            return
        try:
            check_pow(input.receipt_hash, input.sealed_report, input.pow_nonce, committee.pow_bits)
        except ReportRefused as err:
            raise _typed(err) from None

    async def _wait(self, done: object, until: datetime) -> None:
        """Wait for ``done`` until ``until``, reminding the committee every ``remind_every``."""
        assert callable(done)
        while not done() and workflow.now() < until:
            pause = min(self._input.remind_every, until - workflow.now())
            try:
                await workflow.wait_condition(done, timeout=pause)
            except TimeoutError:
                if workflow.now() < until:
                    self._state.reminders += 1
                    await self._notify("case.reminder", f"case waits: {self._state.step}")

    async def _escalate(self) -> None:
        wid = workflow.info().workflow_id
        proposal = keys.case_proposal_id(wid)
        self._step("escalated to a DAO vote")
        self._state.escalated_to = keys.vote_id(proposal)
        await append_audit("charter.case.escalated", wid, {"vote": self._state.escalated_to})
        await self._notify("case.escalated", "the committee did not decide within 72 h: the DAO votes")
        vote = await workflow.start_child_workflow(
            DaoVoteWorkflow.run, DaoVoteInput(proposal=Proposal(
                id=proposal, title=f"Charter violation case {wid} (committee missed its 72 h deadline)",
                body="For: the violation is upheld. Against: dismissed. The committee holds the sealed report.")),
            id=self._state.escalated_to, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        result: DaoVoteResult = await vote
        self._state.outcome = {"approved": "upheld", "rejected": "dismissed"}.get(result.decision, "unresolved")
        self._state.summary = f"decided by DAO vote {proposal}: {result.decision}"
        self._state.decided_by = [self._state.escalated_to]

    async def _close(self) -> CaseResult:
        wid = workflow.info().workflow_id
        self._step("recording outcome")
        await workflow.wait_condition(workflow.all_handlers_finished)
        s = self._state
        published = {"case_id": wid, "source": s.source.value, "outcome": s.outcome, "summary": s.summary,
                     "decided_by": s.decided_by, "opened_at": s.opened_at.isoformat()}
        await workflow.execute_activity("charter_record_case", published, start_to_close_timeout=timedelta(seconds=30),
                                        retry_policy=READ_RETRY)
        receipt = await append_audit("charter.case.decided", wid, {
            **published, "escalated_to": s.escalated_to,
            "within_deadline": not s.escalated_to, "acknowledged_at": s.acknowledged_at.isoformat()
            if s.acknowledged_at else None})
        self._step("decided")
        return CaseResult(case_id=wid, outcome=s.outcome, summary=s.summary, decided_by=s.decided_by,
                          escalated_to=s.escalated_to, audit_seq=receipt.seq)

    async def _notify(self, kind: str, message: str) -> None:
        await workflow.execute_activity(
            "charter_notify_committee", CommitteeNotice(kind=kind, workflow_id=workflow.info().workflow_id,
                                                        message=message, deadline=self._state.deadline),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFY_RETRY)

    # -- committee and reporter input ------------------------------------------------------------------
    def _member(self, action: CaseAction, want: str) -> str:
        if self._committee is None or self._ctx is None:
            raise ApplicationError("the case is still opening; try again in a moment", type=CASE_REFUSED)
        if self._decided is not None or self._state.escalated_to:
            raise ApplicationError(f"case {self._state.case_id} is {self._state.step}: no more actions",
                                   type=CASE_REFUSED, non_retryable=True)
        if action.case_id != self._state.case_id or not action.action.startswith(want):
            raise ApplicationError(f"this signature is for {action.action!r} on {action.case_id!r}, not {want!r} "
                                   f"on {self._state.case_id!r}", type=CASE_REFUSED, non_retryable=True)
        try:
            return verify_case_action(action, self._ctx, self._committee.members)
        except CaseRefused as err:
            raise _typed(err) from None

    @workflow.update
    def claim(self, action: CaseAction) -> CaseState:
        member = self._member(action, "claim")
        if self._state.acknowledged_at is None:
            self._state.acknowledged_at, self._state.acknowledged_by = workflow.now(), member
        self._state.claimed_by.append(member)
        self._step("investigating")
        return self._state

    @claim.validator
    def _validate_claim(self, action: CaseAction) -> None:
        member = self._member(action, "claim")
        try:
            refuse_repeat(member, self._state.claimed_by, f"a claim on {self._state.case_id}")
        except CaseRefused as err:
            raise _typed(err) from None

    @workflow.update
    def note(self, note: CaseNote) -> CaseState:
        member = self._member(note.action, "note")
        if note.to_reporter and not self._input.reporter_box_key:
            raise ApplicationError("this case has no reporter to ask", type=CASE_REFUSED, non_retryable=True)
        self._state.entries.append(CaseEntry(at=workflow.now(), kind="question" if note.to_reporter else "note",
                                             by=member, sealed=note.sealed))
        return self._state

    @note.validator
    def _validate_note(self, note: CaseNote) -> None:
        self._member(note.action, "note")
        if note.action.digest != sha256_hex(note.sealed):
            raise ApplicationError("the note's signature is over another text (digest mismatch)",
                                   type=CASE_REFUSED, non_retryable=True)

    @workflow.update
    def answer(self, answer: ReporterAnswer) -> CaseState:
        self._state.entries.append(CaseEntry(at=workflow.now(), kind="answer", by="reporter", sealed=answer.sealed))
        return self._state

    @answer.validator
    def _validate_answer(self, answer: ReporterAnswer) -> None:
        if not self._input.reporter_verify_key:
            raise ApplicationError("this case has no reporter", type=CASE_REFUSED, non_retryable=True)
        if self._decided is not None or self._state.escalated_to:
            raise ApplicationError("the case is closed to answers", type=CASE_REFUSED, non_retryable=True)
        try:
            verify_answer(self._state.case_id, answer.sealed, answer.signature, self._input.reporter_verify_key)
        except CaseRefused as err:
            raise _typed(err) from None

    @workflow.update
    def decide(self, decision: CaseDecision) -> CaseState:
        member = self._member(decision.action, "decide:")
        outcome = decision.action.action.removeprefix("decide:")
        self._summaries[decision.action.digest] = decision.summary
        self._state.decision_signatures[member] = (outcome, decision.action.digest)
        self._decided = decided(self._state.decision_signatures, self._state.threshold)
        return self._state

    @decide.validator
    def _validate_decide(self, decision: CaseDecision) -> None:
        member = self._member(decision.action, "decide:")
        if decision.action.digest != sha256_hex(decision.summary):
            raise ApplicationError("the decision's signature is over another summary (digest mismatch)",
                                   type=CASE_REFUSED, non_retryable=True)
        if self._state.decision_signatures.get(member) == (decision.action.action.removeprefix("decide:"),
                                                           decision.action.digest):
            raise ApplicationError(f"{member} already signed this decision", type=CASE_REFUSED, non_retryable=True)


SEAL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


async def seal_for_committee(text: str) -> str:
    """``text`` sealed to the committee's key (inside the activity: only the sealed box enters history)."""
    sealed: str = await workflow.execute_activity(
        "charter_seal_for_committee", text, result_type=str, start_to_close_timeout=timedelta(seconds=30),
        retry_policy=SEAL_RETRY)
    return sealed


async def open_system_case(sealed: str, *seed: object) -> str:
    """Start a case the system found itself (an abandoned child of the calling workflow); its id, derived from
    ``seed`` — which must be unique to this finding (e.g. the workflow id, run id and poll)."""
    receipt = hashlib.sha256("\n".join(["westworld-system-case/v1", *map(str, seed)]).encode()).hexdigest()
    case = keys.case_id(receipt)
    await workflow.start_child_workflow(
        ViolationReportWorkflow.run, CaseInput(sealed_report=sealed, receipt_hash=receipt, source=CaseSource.SYSTEM),
        id=case, parent_close_policy=ParentClosePolicy.ABANDON, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return case
