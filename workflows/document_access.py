"""DocumentAccessWorkflow: a request to open a sheltered document, a DAO vote, then k guardians' shares.

request → its terms checked against the network policy (quorum, approval threshold, voting window, share window,
reminders: the policy's, or stricter; looser fails at once with ``LooserThanPolicy``) → child ``DaoVoteWorkflow``
(72 h by default) → if approved, guardians submit their share sealed to the
requester's X25519 key through the ``submit_share`` update (validator: registered guardian, their own index,
the published commitment, a signature over this request, no repeat, inside the window) → with k shares in, the
result holds the sealed shares and the requester reconstructs the key and decrypts LOCALLY (``westworld shelter
open``). The server never sees a clear share or the master key. Every outcome is audited.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.errors import ACCESS_NOT_APPROVED
    from westworld.shelter_access import AccessDecision, AccessResult, DocumentAccessInput
    from westworld.vote import VoteKind
    from workflows.access_base import POLICY_PATCH, AccessWorkflowBase


@workflow.defn
class DocumentAccessWorkflow(AccessWorkflowBase):
    """One access request. Workflow id: ``access:<request id>``."""

    KIND = "normal"
    AUDIT = "shelter.access"

    @workflow.init
    def __init__(self, input: DocumentAccessInput) -> None:
        super().__init__(input.request, input.reminder_every)

    @workflow.run
    async def run(self, input: DocumentAccessInput) -> AccessResult:
        terms = input.vote
        if workflow.patched(POLICY_PATCH):  # the terms are the policy's, or stricter ones the requester asked
            terms = await self._terms_in_force(input.vote, VoteKind.NORMAL, share_window=input.share_window)
        if (refused := await self._open_request()) is not None:
            return refused
        self._step_to("voting", AccessDecision.VOTING)
        self._vote = await (await self._start_vote(terms, VoteKind.NORMAL))
        if self._vote.decision != "approved":
            return await self._finish(AccessDecision.DENIED, f"the DAO vote ended {self._vote.decision}")
        self._deadline = workflow.now() + input.share_window
        self._step_to(self._share_step(), AccessDecision.COLLECTING)
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

    def _share_step(self) -> str:
        return f"collecting shares: {self._box.progress()}"

    def _reminder_message(self) -> str:
        """The first notice tells the guardians the DAO approved; the later ones remind those who have not answered."""
        r = self._request
        return (f"The DAO approved {r.requester}'s access to {r.document_id}: {self._box.progress()} shares "
                f"in; answer with `westworld shelter submit-share {r.request_id}`")

    def _refuse_if_not_collecting(self) -> None:
        if self._decision is not AccessDecision.COLLECTING:
            raise ApplicationError(
                f"{self._request.request_id}: not collecting shares (state: {self._decision.value}); "
                "guardians answer only after the DAO approves", type=ACCESS_NOT_APPROVED, non_retryable=True)
