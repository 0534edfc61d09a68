"""EmergencyAccessWorkflow: an activist's 2-hour path to a sheltered document.

Inside one window (2 h by default) two things must happen: an emergency DAO vote (child ``DaoVoteWorkflow``,
kind emergency, closing early once the outcome is settled) approves, and k guardians approve by submitting
their share sealed to the requester (``submit_share``, the same checks as a normal access; guardians may answer
while the vote runs). Guardians who have not answered are reminded every ``reminder_every`` through the
``notify_guardians`` activity (a webhook by default). When both hold the result carries the sealed shares and
the requester decrypts locally; when the window expires, or the vote fails, access is denied. All audited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from westworld.notify import GuardianNotice
    from westworld.shelter import DocumentRecord
    from westworld.shelter_access import (
        AccessDecision,
        AccessResult,
        AccessState,
        DocumentAccessInput,
        EmergencyAccessInput,
        ShareSubmission,
        ShareTask,
    )
    from westworld.vote import DaoVoteResult, VoteKind
    from workflows.dao_vote import DaoVoteWorkflow
    from workflows.document_access import access_vote_input
    from workflows.shelter_shares import ShareBox, audit, epoch_for, load_document, notify, refusal
    from workflows.steps import DOCUMENT_ID, set_step

KIND = "emergency"


@workflow.defn
class EmergencyAccessWorkflow:
    """One emergency request. Workflow id: ``emergency:<request id>``."""

    @workflow.init
    def __init__(self, input: EmergencyAccessInput) -> None:
        self._input = input
        self._box = ShareBox(workflow.info().workflow_id, input.request.request_id)
        self._decision = AccessDecision.PENDING
        self._step = "checking request"
        self._deadline: datetime | None = None
        self._vote: DaoVoteResult | None = None
        self._document: DocumentRecord | None = None
        self._reminders = 0

    @workflow.run
    async def run(self, input: EmergencyAccessInput) -> AccessResult:
        r = input.request
        self._deadline = workflow.now() + input.window
        self._step_to("checking request", AccessDecision.PENDING)
        try:
            self._document = await load_document(r.document_id)
            self._box.epoch = await epoch_for(self._document)
        except (ActivityError, ApplicationError) as err:  # unknown document, key not held: refused, audited
            return await self._finish(AccessDecision.DENIED, f"refused: {refusal(err)}")
        await audit("shelter.emergency.requested", r.request_id, {
            "kind": KIND, "document_id": r.document_id, "requester": r.requester, "reason": r.reason,
            "requester_public_key": r.requester_public_key, "epoch": self._box.epoch.epoch,
            "deadline": self._deadline.isoformat(),
        })
        terms = input.vote.model_copy(update={"voting_window": input.vote.voting_window or input.window})
        vote_input = access_vote_input(DocumentAccessInput(request=r, vote=terms), VoteKind.EMERGENCY)
        vote = await workflow.start_child_workflow(
            DaoVoteWorkflow.run, vote_input, id=f"vote:{vote_input.proposal.id}",
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        self._step_to(f"voting; guardian shares {self._box.progress()}", AccessDecision.COLLECTING)
        vote_done = asyncio.create_task(self._await_vote(vote))
        reminders = asyncio.create_task(self._remind())
        try:
            await workflow.wait_condition(
                lambda: vote_done.done() and (self._box.full or not self._approved()),
                timeout=self._deadline - workflow.now(),
            )
        except TimeoutError:
            return await self._finish(
                AccessDecision.EXPIRED,
                f"the {input.window} window expired (vote: {self._vote.decision if self._vote else 'not closed'}; "
                f"guardian shares {self._box.progress()})",
            )
        finally:
            reminders.cancel()
        if self._vote is None or self._vote.decision != "approved":
            return await self._finish(AccessDecision.DENIED,
                                      f"the emergency vote ended {self._vote.decision if self._vote else 'in error'}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return await self._finish(AccessDecision.GRANTED, f"emergency vote approved; shares from "
                                  f"{', '.join(sorted(self._box.accepted))}")

    def _approved(self) -> bool:
        return self._vote is not None and self._vote.decision == "approved"

    async def _await_vote(self, vote: workflow.ChildWorkflowHandle[DaoVoteWorkflow, DaoVoteResult]) -> None:
        try:
            self._vote = await vote
        except ChildWorkflowError as err:
            workflow.logger.warning("emergency vote failed: %s", err)
            return
        self._step_to(f"vote {self._vote.decision}; guardian shares {self._box.progress()}",
                      AccessDecision.COLLECTING)

    async def _remind(self) -> None:
        """Remind the guardians who have not answered, every ``reminder_every``, until the window closes."""
        assert self._deadline is not None
        while not self._box.full and workflow.now() < self._deadline:
            waiting = self._box.waiting_for()
            await notify(GuardianNotice(
                workflow_id=workflow.info().workflow_id, request_id=self._input.request.request_id,
                document_id=self._input.request.document_id, kind=KIND, guardians=waiting,
                deadline=self._deadline, reminder=self._reminders,
                message=f"Emergency access to {self._input.request.document_id} requested by "
                        f"{self._input.request.requester}: {self._box.progress()} shares in; answer with "
                        f"`westworld shelter submit-share {self._input.request.request_id}`",
            ))
            self._reminders += 1
            await workflow.sleep(min(self._input.reminder_every, max(self._deadline - workflow.now(),
                                                                      timedelta(seconds=1))))

    async def _finish(self, decision: AccessDecision, reason: str) -> AccessResult:
        self._step_to("recording decision", decision)
        epoch = self._box.epoch
        seq = await audit(f"shelter.emergency.{decision.value}", self._input.request.request_id, {
            "kind": KIND, "document_id": self._input.request.document_id, "reason": reason,
            "guardians": sorted(self._box.accepted), "vote_decision": self._vote.decision if self._vote else None,
            "reminders": self._reminders,
        })
        self._step_to("done", decision)
        return AccessResult(
            request=self._input.request, kind=KIND, decision=decision, reason=reason,
            epoch=epoch.epoch if epoch else None, threshold=epoch.threshold if epoch else None,
            salt=epoch.salt if epoch else None, commitments=epoch.commitments() if epoch else {},
            master_public_key=epoch.master_public_key if epoch else None, document=self._document,
            shares=list(self._box.accepted.values()) if decision is AccessDecision.GRANTED else [],
            vote=self._vote, audit_seq=seq,
        )

    @workflow.update
    async def submit_share(self, sub: ShareSubmission) -> int:
        """A guardian's approval: their share sealed to the requester. Returns how many shares are in."""
        n = self._box.accept(sub)
        self._step_to(f"{'voting' if self._vote is None else 'vote ' + self._vote.decision}; guardian shares "
                      f"{self._box.progress()}", AccessDecision.COLLECTING)
        return n

    @submit_share.validator
    def _validate_share(self, sub: ShareSubmission) -> None:
        self._box.check(sub, self._deadline)

    @workflow.query
    def status(self) -> AccessState:
        epoch = self._box.epoch
        return AccessState(
            request=self._input.request, kind=KIND, decision=self._decision, step=self._step,
            deadline=self._deadline, epoch=epoch.epoch if epoch else None,
            threshold=epoch.threshold if epoch else None, submitted=sorted(self._box.accepted),
            waiting_for=self._box.waiting_for(), vote_decision=self._vote.decision if self._vote else None,
        )

    @workflow.query
    def share_task(self, guardian_id: str) -> ShareTask | None:
        return self._box.task(guardian_id, self._input.request.requester_public_key)

    def _step_to(self, step: str, decision: AccessDecision) -> None:
        self._step, self._decision = step, decision
        set_step(step, DOCUMENT_ID.value_set(self._input.request.document_id))
