"""GuardianRotationWorkflow: move the master key to a new guardian set without ever losing it.

policy and current epoch first (k is the current epoch's, or the policy's ``shelter.guardian_threshold_min`` if
higher, never the starter's; windows and reminders within the policy, else ``LooserThanPolicy`` at once) → plan
(``begin_rotation``: current epoch, new set, one-time rotation key) → if the set changes, a DAO vote on it (child
``DaoVoteWorkflow``, the policy's terms; not approved: abandoned before anyone is asked for a share) → k current
guardians hand in their share sealed to the rotation key (``submit_share``, same checks as an access) →
``reshare_master_key`` re-splits the key with fresh randomness for the new set and stores the new epoch as pending
→ each new guardian acknowledges (``acknowledge``: a signed proof computed from their opened share) →
``activate_key_epoch`` makes the new epoch current and retires the old one. If too few guardians answer in time the
rotation is abandoned and the old epoch stays valid; while it waits its step says so ("waiting for guardian shares:
1/3"), which `westworld stuck` shows. A Temporal Schedule (``guardian-rotation``, every ~6 months) starts it with
``{}``: fresh shares for the same guardians, or the set registered with `shelter rotate --next` (then voted on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld.errors import INVALID_INPUT, SHARE_WINDOW_CLOSED, ShareRejected, WestworldError
    from westworld.notify import GuardianNotice
    from westworld.policy import NetworkPolicy
    from westworld.rotation import (
        Acknowledgement,
        AckTask,
        BeginRotationInput,
        GuardianRotationInput,
        PendingEpoch,
        ReshareInput,
        RotationPhase,
        RotationPlan,
        RotationResult,
        RotationState,
        changes_guardians,
        check_ack,
        enough_guardians,
        guardian_vote_input,
        rotation_threshold,
        without_guardians,
    )
    from westworld.shelter import KeyEpoch
    from westworld.shelter_access import ShareSubmission, ShareTask
    from westworld.vote import DaoVoteResult
    from workflows.access_base import load_policy, refused_by_policy
    from workflows.dao_vote import DaoVoteWorkflow
    from workflows.shelter_shares import STORE_RETRY, ShareBox, audit, load_epoch, notify
    from workflows.steps import set_step


POLICY_PATCH = "rotation-k-and-guardians-by-policy"  # runs started before it took k and the new set as given


@workflow.defn
class GuardianRotationWorkflow:
    """One rotation. Workflow id: ``rotation:<current epoch>`` (or the schedule's id); a rotation abandoned for lack
    of guardians can be started again under the same id (a new run)."""

    @workflow.init
    def __init__(self, input: GuardianRotationInput | None = None) -> None:
        self._input = input or GuardianRotationInput()  # the schedule starts it without arguments
        self._id = workflow.info().workflow_id
        # What shares, acknowledgements and the rotation key are bound to: this run only (a retried rotation of
        # the same epoch is a new run; nothing handed to an abandoned one is valid in it).
        self._key = keys.rotation_run_key(self._id, workflow.info().run_id)
        self._box = ShareBox(self._key, self._key)
        self._plan: RotationPlan | None = None
        self._pending: PendingEpoch | None = None
        self._acks: set[str] = set()
        self._phase = RotationPhase.PLANNING
        self._step = "planning"
        self._deadline: datetime | None = None
        self._vote_id: str | None = None
        self._vote: DaoVoteResult | None = None

    @workflow.run
    async def run(self, input: GuardianRotationInput | None = None) -> RotationResult:
        input = self._input
        self._step_to("planning", RotationPhase.PLANNING)
        if workflow.patched(POLICY_PATCH):  # k from the epoch/policy; a new guardian set needs the DAO's vote
            policy = await load_policy()
            plan = self._plan = await self._plan_under_policy(policy, input)
            vote_needed = changes_guardians(plan)
            await audit("shelter.rotation.started", self._id, {
                "from_epoch": plan.from_epoch.epoch, "new_guardians": [g.id for g in plan.new_guardians],
                "threshold": plan.threshold, "rotate_master_key": input.rotate_master_key,
                "vote": self._vote_name(plan) if vote_needed else None,
            })
            if vote_needed and (refusal := await self._dao_approves(policy, plan)) is not None:
                return await self._abandon(refusal)
        else:
            self._plan = await workflow.execute_activity(
                "begin_rotation", BeginRotationInput(rotation_id=self._key, new_guardians=input.new_guardians,
                                                     threshold=input.threshold),
                result_type=RotationPlan, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY,
            )
            plan = self._plan
            await audit("shelter.rotation.started", self._id, {
                "from_epoch": plan.from_epoch.epoch, "new_guardians": [g.id for g in plan.new_guardians],
                "threshold": plan.threshold, "rotate_master_key": input.rotate_master_key,
            })
        self._box.epoch = plan.from_epoch
        self._deadline = workflow.now() + input.share_window
        self._step_to(f"waiting for guardian shares: {self._box.progress()}", RotationPhase.COLLECTING)
        if not await self._wait(lambda: self._box.full, input.share_window, "shares", self._box.waiting_for):
            return await self._abandon(f"only {self._box.progress()} current guardians handed in their share "
                                       f"within {input.share_window}; epoch {plan.from_epoch.epoch} stays valid")
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._step_to("resharing", RotationPhase.RESHARING)
        self._pending = await workflow.execute_activity(
            "reshare_master_key",
            ReshareInput(plan=plan, shares=list(self._box.accepted.values()),
                         rotate_master_key=input.rotate_master_key),
            result_type=PendingEpoch, start_to_close_timeout=timedelta(minutes=10), retry_policy=STORE_RETRY,
        )
        needed = self._acks_needed()
        self._deadline = workflow.now() + input.ack_window
        self._step_to(f"waiting for acknowledgements: 0/{needed}", RotationPhase.ACKNOWLEDGING)
        if not await self._wait(lambda: len(self._acks) >= needed, input.ack_window, "acknowledgement",
                                self._ack_waiting):
            return await self._abandon(f"only {len(self._acks)}/{needed} new guardians acknowledged within "
                                       f"{input.ack_window}; epoch {plan.from_epoch.epoch} stays valid")
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._step_to("activating", RotationPhase.ACKNOWLEDGING)
        try:
            new: KeyEpoch = await workflow.execute_activity(
                "activate_key_epoch", self._pending, result_type=KeyEpoch,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY,
            )
        except ActivityError as err:  # refused for good (e.g. a document not covered by the re-wrap)
            return await self._abandon(f"activation refused: {err.cause or err}; epoch {plan.from_epoch.epoch} "
                                       "stays valid")
        return await self._finish(RotationPhase.COMPLETED, f"epoch {new.epoch} active with {len(self._acks)} "
                                  f"acknowledgements; epoch {plan.from_epoch.epoch} retired", new.epoch)

    async def _plan_under_policy(self, policy: NetworkPolicy, input: GuardianRotationInput) -> RotationPlan:
        """Check the input against the policy and the current epoch before anything is done, then plan with the
        k in force (the current k, or the policy's floor if higher). Refusals fail the run, non-retryable."""
        current = await load_epoch()
        if input.remove_guardians:  # `shelter guardians remove`: the current set less these
            try:
                input = input.model_copy(update={
                    "new_guardians": without_guardians(self._id, current, input.remove_guardians)})
            except WestworldError as err:
                raise ApplicationError(err.message, type=INVALID_INPUT, non_retryable=True) from err
        try:
            k = rotation_threshold(policy, self._id, input, current)
            if input.new_guardians:  # a set given (or the current one less some): n >= k, or no vote is worth it
                enough_guardians(self._id, k, input.new_guardians)
        except WestworldError as err:
            raise refused_by_policy(err) from err
        plan: RotationPlan = await workflow.execute_activity(
            "begin_rotation", BeginRotationInput(rotation_id=self._key, new_guardians=input.new_guardians,
                                                 threshold=k),
            result_type=RotationPlan, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY,
        )
        if plan.from_epoch.epoch != current.epoch:  # another rotation activated an epoch meanwhile
            await workflow.execute_activity("abandon_rotation", self._key,
                                            start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
            raise ApplicationError(f"{self._id}: key epoch {current.epoch} was replaced by {plan.from_epoch.epoch} "
                                   "while planning; start the rotation again", type=INVALID_INPUT,
                                   non_retryable=True)
        return plan

    def _vote_name(self, plan: RotationPlan) -> str:
        # a retried rotation is a new run, so a new proposal
        return keys.rotation_proposal_id(plan.from_epoch.epoch, workflow.info().run_id)

    async def _dao_approves(self, policy: NetworkPolicy, plan: RotationPlan) -> str | None:
        """Run the DAO vote on the new guardian set (the policy's terms); None if approved, else why not."""
        proposal_id = self._vote_name(plan)
        self._vote_id = keys.vote_id(proposal_id)
        self._step_to(f"waiting for the DAO vote on the new guardians ({self._vote_id})", RotationPhase.VOTING)
        self._vote = await workflow.execute_child_workflow(
            DaoVoteWorkflow.run, guardian_vote_input(policy, plan, proposal_id), id=self._vote_id,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        if self._vote.decision == "approved":
            return None
        return (f"the DAO vote {self._vote_id} on the new guardian set ended {self._vote.decision}; epoch "
                f"{plan.from_epoch.epoch} stays valid")

    async def _wait(self, done: Callable[[], bool], window: timedelta, what: str,
                    waiting: Callable[[], list[str]]) -> bool:
        """Wait for ``done()`` within ``window``, reminding those in ``waiting()``; False on timeout."""
        reminders = asyncio.create_task(self._remind(what, waiting))
        try:
            await workflow.wait_condition(done, timeout=window)
        except TimeoutError:
            return False
        finally:
            reminders.cancel()
        return True

    async def _remind(self, what: str, waiting: Callable[[], list[str]]) -> None:
        n = 0
        while self._deadline is not None and workflow.now() < self._deadline:
            await notify(GuardianNotice(
                workflow_id=self._id, request_id=self._id, document_id="", kind="rotation", guardians=waiting(),
                deadline=self._deadline, reminder=n,
                message=f"Guardian rotation {self._id} waits for your {what}: `westworld shelter "
                        f"{'submit-share' if what == 'shares' else 'acknowledge'} {self._id}`"))
            n += 1
            await workflow.sleep(self._input.reminder_every)

    async def _abandon(self, reason: str) -> RotationResult:
        await workflow.execute_activity("abandon_rotation", self._key, start_to_close_timeout=timedelta(seconds=30),
                                        retry_policy=STORE_RETRY)
        return await self._finish(RotationPhase.ABANDONED, reason, None)

    async def _finish(self, phase: RotationPhase, reason: str, new_epoch: int | None) -> RotationResult:
        plan = self._plan
        self._step_to("recording result", phase)
        guardians = [g.id for g in plan.new_guardians] if plan else []
        seq = await audit(f"shelter.rotation.{phase.value}", self._id, {
            "reason": reason, "from_epoch": plan.from_epoch.epoch if plan else None, "new_epoch": new_epoch,
            "guardians": guardians, "shares_from": sorted(self._box.accepted), "acknowledged": sorted(self._acks),
            "master_key_rotated": bool(self._pending and self._pending.master_key_rotated and new_epoch),
        })
        self._step_to("done", phase)
        return RotationResult(
            phase=phase, reason=reason, from_epoch=plan.from_epoch.epoch if plan else None, new_epoch=new_epoch,
            guardians=guardians, audit_seq=seq,
            master_key_rotated=bool(self._pending and self._pending.master_key_rotated and new_epoch),
            rewrapped_documents=self._pending.rewrapped_documents if self._pending and new_epoch else 0,
        )

    def _acks_needed(self) -> int:
        total = len(self._pending.ack_hashes) if self._pending else 0
        return min(self._input.ack_quorum or total, total)

    def _ack_waiting(self) -> list[str]:
        return [g for g in (self._pending.ack_hashes if self._pending else {}) if g not in self._acks]

    @workflow.update
    async def submit_share(self, sub: ShareSubmission) -> int:
        """A current guardian hands in their share sealed to the rotation key."""
        self._box.accept(sub)
        self._step_to(f"waiting for guardian shares: {self._box.progress()}", RotationPhase.COLLECTING)
        return len(self._box.accepted)

    @submit_share.validator
    def _validate_share(self, sub: ShareSubmission) -> None:
        if self._phase is not RotationPhase.COLLECTING:
            raise ApplicationError(f"{self._id} is not collecting shares (phase: {self._phase.value})",
                                   type=SHARE_WINDOW_CLOSED, non_retryable=True)
        self._box.check(sub, self._deadline)

    @workflow.update
    async def acknowledge(self, ack: Acknowledgement) -> int:
        """A new guardian proves they opened their share."""
        self._acks.add(ack.guardian_id)
        self._step_to(f"waiting for acknowledgements: {len(self._acks)}/{self._acks_needed()}",
                      RotationPhase.ACKNOWLEDGING)
        return len(self._acks)

    @acknowledge.validator
    def _validate_ack(self, ack: Acknowledgement) -> None:
        if self._phase is not RotationPhase.ACKNOWLEDGING or self._pending is None:
            raise ApplicationError(f"{self._id} is not waiting for acknowledgements (phase: {self._phase.value})",
                                   type=SHARE_WINDOW_CLOSED, non_retryable=True)
        if self._deadline is not None and workflow.now() >= self._deadline:
            raise ApplicationError(f"{self._id}: the acknowledgement window closed at {self._deadline.isoformat()}",
                                   type=SHARE_WINDOW_CLOSED, non_retryable=True)
        try:
            check_ack(ack, self._pending, self._key, self._acks)
        except ShareRejected as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err

    @workflow.query
    def status(self) -> RotationState:
        return RotationState(
            phase=self._phase, step=self._step, from_epoch=self._plan.from_epoch.epoch if self._plan else None,
            new_epoch=self._pending.epoch.epoch if self._pending else None, shares_in=sorted(self._box.accepted),
            shares_needed=self._box.needed, acknowledged=sorted(self._acks),
            acks_needed=self._acks_needed(),
            waiting_for=self._ack_waiting() if self._pending else self._box.waiting_for(),
            threshold=self._plan.threshold if self._plan else None,
            new_guardians=[g.id for g in self._plan.new_guardians] if self._plan else [],
            vote_id=self._vote_id, vote_decision=self._vote.decision if self._vote else None,
        )

    @workflow.query
    def share_task(self, guardian_id: str) -> ShareTask | None:
        """For a current guardian: their share and the rotation key to seal it to."""
        if self._plan is None or self._phase is not RotationPhase.COLLECTING:
            return None
        return self._box.task(guardian_id, self._plan.rotation_public_key)

    @workflow.query
    def ack_task(self, guardian_id: str) -> AckTask | None:
        """For a new guardian: their sealed share in the pending epoch."""
        share = self._pending.epoch.share_of(guardian_id) if self._pending else None
        if self._pending is None or share is None:
            return None
        return AckTask(workflow_id=self._key, guardian_id=guardian_id, epoch=self._pending.epoch.epoch,
                       encrypted_share=share, salt=self._pending.epoch.salt,
                       acknowledged=guardian_id in self._acks)

    def _step_to(self, step: str, phase: RotationPhase) -> None:
        self._step, self._phase = step, phase
        set_step(step)
