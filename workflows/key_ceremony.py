"""KeyCeremonyWorkflow: create the shelter's first key epoch on the worker, and audit it.

The genesis ceremony is allowed only while no key epoch exists; after it, new guardians come through a rotation
(DAO vote and k current guardians), or a fresh ceremony approved by k of the current epoch's guardians' signatures
(:func:`westworld.shelter.check_ceremony`). The check runs here, and again atomically where the epoch is stored.

The master key is generated, split k-of-n and sealed to each guardian inside the ``create_ceremony_epoch``
activity; only the public epoch (sealed shares, commitments, master public key) comes back into history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.errors import WestworldError
    from westworld.shelter import CreateEpochInput, KeyEpoch, KeyEpochStatus, check_ceremony
    from workflows.shelter_shares import audit
    from workflows.steps import set_step

GATE_PATCH = "key-ceremony-authority"  # genesis only, or k current guardians' approvals
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn
class KeyCeremonyWorkflow:
    """Workflow id: ``key-ceremony:<epoch_key>`` (the epoch key makes a retried ceremony return the same epoch)."""

    @workflow.run
    async def run(self, input: CreateEpochInput) -> KeyEpoch:
        gated = workflow.patched(GATE_PATCH)
        set_step("creating key epoch")
        inp = input if input.epoch_key else input.model_copy(update={"epoch_key": workflow.info().workflow_id})
        if not gated:  # runs started before the gate (their activity is no longer registered on the worker)
            epoch: KeyEpoch = await workflow.execute_activity(
                "create_key_epoch", inp, result_type=KeyEpoch, start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RETRY)
            extra: dict[str, object] = {}
        else:
            epoch, extra = await self._authorised(inp)
        set_step("recording")
        await audit("shelter.epoch.created", f"epoch-{epoch.epoch}", {
            "epoch": epoch.epoch, "threshold": epoch.threshold, "master_public_key": epoch.master_public_key,
            "guardians": [g.id for g in epoch.guardians],
            "commitments": {str(i): c for i, c in epoch.commitments().items()}, **extra,
        })
        set_step("done")
        return epoch

    async def _authorised(self, inp: CreateEpochInput) -> tuple[KeyEpoch, dict[str, object]]:
        key = inp.epoch_key or ""
        status: KeyEpochStatus = await workflow.execute_activity(
            "key_epoch_status", key, result_type=KeyEpochStatus, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY)
        extra: dict[str, object] = {"retried": True}
        if status.created is None:  # a retried ceremony gets the epoch it made; a new one is checked
            try:
                approvers = check_ceremony(inp, key, status.current, status.latest > 0)
            except WestworldError as err:
                raise ApplicationError(err.message, type=err.type, non_retryable=True) from None
            extra = {"genesis": status.latest == 0, "approved_by": approvers,
                     "after_epoch": status.current.epoch if status.current else None}
        try:
            epoch: KeyEpoch = await workflow.execute_activity(
                "create_ceremony_epoch", inp, result_type=KeyEpoch, start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RETRY)
        except ActivityError as err:  # refused in the store: another ceremony or a rotation won the race
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise
        return epoch, extra
