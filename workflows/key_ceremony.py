"""KeyCeremonyWorkflow: create the shelter's first key epoch (or a fresh one) on the worker, and audit it.

The master key is generated, split k-of-n and sealed to each guardian inside the ``create_key_epoch`` activity;
only the public epoch (sealed shares, commitments, master public key) comes back into history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.shelter import CreateEpochInput, KeyEpoch
    from workflows.shelter_shares import audit
    from workflows.steps import set_step


@workflow.defn
class KeyCeremonyWorkflow:
    """Workflow id: ``key-ceremony:<epoch_key>`` (the epoch key makes a retried ceremony return the same epoch)."""

    @workflow.run
    async def run(self, input: CreateEpochInput) -> KeyEpoch:
        set_step("creating key epoch")
        inp = input if input.epoch_key else input.model_copy(update={"epoch_key": workflow.info().workflow_id})
        epoch: KeyEpoch = await workflow.execute_activity(
            "create_key_epoch", inp, result_type=KeyEpoch, start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
        )
        set_step("recording")
        await audit("shelter.epoch.created", f"epoch-{epoch.epoch}", {
            "epoch": epoch.epoch, "threshold": epoch.threshold, "master_public_key": epoch.master_public_key,
            "guardians": [g.id for g in epoch.guardians],
            "commitments": {str(i): c for i, c in epoch.commitments().items()},
        })
        set_step("done")
        return epoch
