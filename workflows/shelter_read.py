"""CurrentKeyEpochWorkflow: the number of the shelter's current key epoch, read by the worker (which holds the
database), so that `westworld shelter rotate` names its rotation ``rotation:<epoch>`` without opening the project
database. Read-only; workflow id ``key-epoch-read:<anything>``. Query ``epoch``: the epoch itself."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from westworld.shelter import KeyEpoch


@workflow.defn
class CurrentKeyEpochWorkflow:
    def __init__(self) -> None:
        self._epoch: KeyEpoch | None = None

    @workflow.run
    async def run(self) -> int:
        epoch: KeyEpoch = await workflow.execute_activity(
            "current_key_epoch", result_type=KeyEpoch, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)))
        self._epoch = epoch
        return epoch.epoch

    @workflow.query
    def epoch(self) -> KeyEpoch | None:
        """The epoch read (public: guardians, k, commitments, sealed shares), so that `shelter rotate` and
        `shelter guardians remove` can refuse a set smaller than k before they start anything."""
        return self._epoch
