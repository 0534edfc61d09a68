"""KeyCeremonyWorkflow on a real Temporal server and SQLite: the epoch is made on the worker and audited; once an
epoch exists, `guardians init` needs k current guardians' signatures (the hostile side: tests/security)."""

from __future__ import annotations

import uuid

import pytest

from activities.sql.key_epoch_store import KeyEpochStore
from tests.workflows.conftest import Harness
from tests.workflows.shelter_helpers import open_own_share
from tests.workflows.test_shelter_cli import cli
from westworld import envelope, shamir
from westworld.keys import key_ceremony_id
from westworld.shelter import CreateEpochInput
from workers.cli.shelter_keys import make_keys, save_keys
from workflows.key_ceremony import KeyCeremonyWorkflow


async def test_ceremony_creates_an_audited_epoch_the_guardians_can_open(harness: Harness) -> None:
    keys = [make_keys(f"g{i}") for i in range(1, 6)]
    inp = CreateEpochInput(guardians=[k.public() for k in keys], threshold=3)
    epoch = await harness.client.execute_workflow(KeyCeremonyWorkflow.run, inp, id=key_ceremony_id(str(uuid.uuid4())),
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


async def test_guardians_init_after_genesis_needs_k_current_guardians_to_sign(harness: Harness) -> None:
    d = harness.settings.data_dir / "shelter" / "keys"
    for name in ("a1", "a2", "a3", "b1", "b2", "b3"):
        save_keys(make_keys(name), d / f"{name}.key")

    def pubs(prefix: str) -> list[str]:
        return [a for i in (1, 2, 3) for a in ("--guardian", str(d / f"{prefix}{i}.key.pub"))]

    assert "key epoch 1: 2-of-3" in await cli(harness, "shelter", "guardians", "init", "--threshold", "2", *pubs("a"))
    refused = await cli(harness, "shelter", "guardians", "init", "--threshold", "2", *pubs("b"),
                        "--approver", str(d / "b1.key"), ok=False)
    assert "Unauthorised" in refused and "westworld shelter rotate" in refused and "is not a guardian" in refused
    signed = await cli(harness, "shelter", "guardians", "init", "--threshold", "2", *pubs("b"),
                       "--approver", str(d / "a1.key"), "--approver", str(d / "a3.key"))
    assert "key epoch 2: 2-of-3" in signed and "b1, b2, b3" in signed
