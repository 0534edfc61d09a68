"""EmergencyAccessWorkflow: an activist's 2-hour path to a sheltered document.

The window (2 h by default, at most the policy's ``shelter.emergency_window_max``) and the vote's terms are checked
against the network policy first: looser than the policy fails at once (``LooserThanPolicy``). Inside that window
two things must happen: an emergency DAO vote (child ``DaoVoteWorkflow``,
kind emergency, closing early once the outcome is settled) approves, and k guardians approve by submitting
their share sealed to the requester (``submit_share``, the same checks as a normal access; guardians may answer
while the vote runs). Guardians who have not answered are reminded every ``reminder_every`` through the
``notify_guardians`` activity (a webhook by default). When both hold the result carries the sealed shares and
the requester decrypts locally; when the window expires, or the vote fails, access is denied. All audited.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from westworld.shelter_access import AccessDecision, AccessResult, EmergencyAccessInput
    from westworld.vote import DaoVoteResult, VoteKind
    from workflows.access_base import POLICY_PATCH, AccessWorkflowBase
    from workflows.dao_vote import DaoVoteWorkflow


@workflow.defn
class EmergencyAccessWorkflow(AccessWorkflowBase):
    """One emergency request. Workflow id: ``emergency:<request id>``."""

    KIND = "emergency"
    AUDIT = "shelter.emergency"

    @workflow.init
    def __init__(self, input: EmergencyAccessInput) -> None:
        super().__init__(input.request, input.reminder_every)

    @workflow.run
    async def run(self, input: EmergencyAccessInput) -> AccessResult:
        if workflow.patched(POLICY_PATCH):  # the window and vote terms are the policy's, or stricter
            terms = await self._terms_in_force(input.vote, VoteKind.EMERGENCY, window=input.window)
            self._deadline = workflow.now() + input.window
            if (refused := await self._open_request(deadline=self._deadline.isoformat())) is not None:
                return refused
        else:
            self._deadline = workflow.now() + input.window
            if (refused := await self._open_request(deadline=self._deadline.isoformat())) is not None:
                return refused
            terms = input.vote.model_copy(update={"voting_window": input.vote.voting_window or input.window})
        vote = await self._start_vote(terms, VoteKind.EMERGENCY)
        self._step_to(self._share_step(), AccessDecision.COLLECTING)
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
        self._step_to(self._share_step(), AccessDecision.COLLECTING)

    def _share_step(self) -> str:
        vote = "voting" if self._vote is None else f"vote {self._vote.decision}"
        return f"{vote}; guardian shares {self._box.progress()}"

    def _reminder_message(self) -> str:
        r = self._request
        return (f"Emergency access to {r.document_id} requested by {r.requester}: {self._box.progress()} shares "
                f"in; answer with `westworld shelter submit-share {r.request_id}`")

    def _reminder_pause(self) -> timedelta:
        """Never past the window's end (at least a second)."""
        assert self._deadline is not None
        return min(self._reminder_every, max(self._deadline - workflow.now(), timedelta(seconds=1)))

    def _audit_extra(self) -> dict[str, Any]:
        return {"reminders": self._reminders}
