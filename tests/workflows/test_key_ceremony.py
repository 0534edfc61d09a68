"""KeyCeremonyWorkflow on a real Temporal server and SQLite: the epoch is made on the worker and audited."""

from __future__ import annotations

import uuid

import pytest

from activities.shelter_keys import KeyEpochStore
from tests.workflows.conftest import Harness
from tests.workflows.shelter_helpers import open_own_share
from westworld import envelope, shamir
from westworld.shelter import CreateEpochInput
from workers.shelter_local import make_keys
from workflows.key_ceremony import KeyCeremonyWorkflow


async def test_ceremony_creates_an_audited_epoch_the_guardians_can_open(harness: Harness) -> None:
    keys = [make_keys(f"g{i}") for i in range(1, 6)]
    inp = CreateEpochInput(guardians=[k.public() for k in keys], threshold=3)
    epoch = await harness.client.execute_workflow(KeyCeremonyWorkflow.run, inp, id=f"key-ceremony:{uuid.uuid4()}",
                                                  task_queue=harness.task_queue)
    assert (epoch.threshold, len(epoch.shares)) == (3, 5)
    assert await KeyEpochStore(harness.resources.database).current() == epoch
    master = shamir.combine([open_own_share(k, epoch) for k in keys[1:4]], 3)
    assert envelope.public_key(master).hex() == epoch.master_public_key
    entry = (await harness.resources.audit.latest(1))[0]
    assert entry.kind == "shelter.epoch.created" and entry.payload["guardians"] == [k.id for k in keys]


def test_ceremony_input_refuses_an_impossible_threshold() -> None:
    keys = [make_keys(f"g{i}") for i in range(1, 3)]
    with pytest.raises(ValueError, match="threshold 3 exceeds the 2 guardians"):
        CreateEpochInput(guardians=[k.public() for k in keys], threshold=3)
