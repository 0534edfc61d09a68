"""DocumentAccessWorkflow: a request to open a sheltered document, a DAO vote, then k guardians' shares.

request → child ``DaoVoteWorkflow`` (72 h by default) → if approved, guardians submit their share sealed to the
requester's X25519 key through the ``submit_share`` update (validator: registered guardian, their own index,
the published commitment, a signature over this request, no repeat, inside the window) → with k shares in, the
result holds the sealed shares and the requester reconstructs the key and decrypts LOCALLY (``westworld shelter
open``). The server never sees a clear share or the master key. Every outcome is audited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.errors import ACCESS_NOT_APPROVED
    from westworld.notify import GuardianNotice
    from westworld.shelter import DocumentRecord
    from westworld.shelter_access import (
        AccessDecision,
        AccessResult,
        AccessState,
        DocumentAccessInput,
        ShareSubmission,
        ShareTask,
    )
    from westworld.vote import DaoVoteInput, DaoVoteResult, Proposal, VoteKind
    from workflows.dao_vote import DaoVoteWorkflow
    from workflows.shelter_shares import ShareBox, audit, epoch_for, load_document, notify, refusal
    from workflows.steps import DOCUMENT_ID, set_step

KIND = "normal"


def access_vote_input(inp: DocumentAccessInput, kind: VoteKind, early_close: bool = True) -> DaoVoteInput:
    r = inp.request
    prefix = "emergency" if kind is VoteKind.EMERGENCY else "access"
    return DaoVoteInput(
        proposal=Proposal(
            id=f"{prefix}-{r.request_id}",
            title=f"{'EMERGENCY: ' if kind is VoteKind.EMERGENCY else ''}open document {r.document_id} "
                  f"for {r.requester}"[:200],
            body=f"Reason given: {r.reason}\n\nRequest {r.request_id}; if approved, {r.requester} may "
                 "reconstruct the shelter key locally from k guardians' shares.",
        ),
        kind=kind, voting_window=inp.vote.voting_window, quorum=inp.vote.quorum,
        approval_threshold=inp.vote.approval_threshold, backend=inp.vote.backend, early_close=early_close,
    )


@workflow.defn
class DocumentAccessWorkflow:
    """One access request. Workflow id: ``access:<request id>``."""

    @workflow.init
    def __init__(self, input: DocumentAccessInput) -> None:
        self._input = input
        self._box = ShareBox(workflow.info().workflow_id, input.request.request_id)
        self._decision = AccessDecision.PENDING
        self._step = "checking request"
        self._deadline: datetime | None = None
        self._vote: DaoVoteResult | None = None
        self._document: DocumentRecord | None = None

    @workflow.run
    async def run(self, input: DocumentAccessInput) -> AccessResult:
        r = input.request
        self._step_to("checking request", AccessDecision.PENDING)
        try:
            self._document = await load_document(r.document_id)
            self._box.epoch = await epoch_for(self._document)
        except (ActivityError, ApplicationError) as err:  # unknown document, key not held: refused, audited
            return await self._finish(AccessDecision.DENIED, f"refused: {refusal(err)}")
        await audit("shelter.access.requested", r.request_id, {
            "kind": KIND, "document_id": r.document_id, "requester": r.requester, "reason": r.reason,
            "requester_public_key": r.requester_public_key, "epoch": self._box.epoch.epoch,
        })
        self._step_to("voting", AccessDecision.VOTING)
        vote_input = access_vote_input(input, VoteKind.NORMAL)
        self._vote = await workflow.execute_child_workflow(
            DaoVoteWorkflow.run, vote_input, id=f"vote:{vote_input.proposal.id}",
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        if self._vote.decision != "approved":
            return await self._finish(AccessDecision.DENIED, f"the DAO vote ended {self._vote.decision}")
        self._deadline = workflow.now() + input.share_window
        self._step_to(f"collecting shares: 0/{self._box.needed}", AccessDecision.COLLECTING)
        reminders = asyncio.create_task(self._remind())
        try:
            await workflow.wait_condition(lambda: self._box.full, timeout=input.share_window)
        except TimeoutError:
            return await self._finish(
                AccessDecision.EXPIRED,
                f"only {self._box.progress()} guardian shares arrived within {input.share_window}",
            )
        finally:
            reminders.cancel()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return await self._finish(AccessDecision.GRANTED, f"approved by vote; shares from {self._box.progress()} "
                                  f"guardians: {', '.join(sorted(self._box.accepted))}")

    async def _remind(self) -> None:
        """Tell the guardians the DAO approved, then remind those who have not answered every ``reminder_every``."""
        assert self._deadline is not None
        r, n = self._input.request, 0
        while not self._box.full and workflow.now() < self._deadline:
            await notify(GuardianNotice(
                workflow_id=workflow.info().workflow_id, request_id=r.request_id, document_id=r.document_id,
                kind=KIND, guardians=self._box.waiting_for(), deadline=self._deadline, reminder=n,
                message=f"The DAO approved {r.requester}'s access to {r.document_id}: {self._box.progress()} shares "
                        f"in; answer with `westworld shelter submit-share {r.request_id}`"))
            n += 1
            await workflow.sleep(self._input.reminder_every)

    async def _finish(self, decision: AccessDecision, reason: str) -> AccessResult:
        self._step_to("recording decision", decision)
        epoch = self._box.epoch
        result = AccessResult(
            request=self._input.request, kind=KIND, decision=decision, reason=reason,
            epoch=epoch.epoch if epoch else None, threshold=epoch.threshold if epoch else None,
            salt=epoch.salt if epoch else None, commitments=epoch.commitments() if epoch else {},
            master_public_key=epoch.master_public_key if epoch else None, document=self._document,
            shares=list(self._box.accepted.values()) if decision is AccessDecision.GRANTED else [],
            vote=self._vote,
        )
        seq = await audit(f"shelter.access.{decision.value}", self._input.request.request_id, {
            "kind": KIND, "document_id": self._input.request.document_id, "reason": reason,
            "guardians": sorted(self._box.accepted), "vote_decision": self._vote.decision if self._vote else None,
        })
        self._step_to("done", decision)
        return result.model_copy(update={"audit_seq": seq})

    @workflow.update
    async def submit_share(self, sub: ShareSubmission) -> int:
        """Accept a guardian's share sealed to the requester; returns how many shares are in."""
        n = self._box.accept(sub)
        self._step_to(f"collecting shares: {self._box.progress()}", AccessDecision.COLLECTING)
        return n

    @submit_share.validator
    def _validate_share(self, sub: ShareSubmission) -> None:
        if self._decision is not AccessDecision.COLLECTING:
            raise ApplicationError(
                f"{self._input.request.request_id}: not collecting shares (state: {self._decision.value}); "
                "guardians answer only after the DAO approves", type=ACCESS_NOT_APPROVED, non_retryable=True)
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
        """What guardian ``guardian_id`` needs to answer (None if not a guardian of the epoch)."""
        return self._box.task(guardian_id, self._input.request.requester_public_key)

    def _step_to(self, step: str, decision: AccessDecision) -> None:
        self._step, self._decision = step, decision
        set_step(step, DOCUMENT_ID.value_set(self._input.request.document_id))
