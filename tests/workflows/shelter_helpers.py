"""Helpers of the shelter workflow tests: guardians with real keys, a real key epoch, answering as a guardian."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.shelter_keys import ShelterKeyActivities
from tests.workflows.conftest import Harness
from tests.workflows.shelter_seed import Sheltered
from tests.workflows.shelter_seed import seed_document as _seed
from westworld import envelope, shamir
from westworld.shelter import CreateEpochInput, KeyEpoch, share_aad
from westworld.shelter_access import ShareSubmission, ShareTask
from workers.cli.shelter_keys import PartyKeys, answer_share, make_keys


@dataclass
class Guardians:
    keys: list[PartyKeys]
    epoch: KeyEpoch
    requester: PartyKeys
    outsider: PartyKeys
    secrets_seen: list[bytes] = field(default_factory=list)

    def key(self, guardian_id: str) -> PartyKeys:
        return next(k for k in self.keys if k.id == guardian_id)

    def master_key(self, epoch: KeyEpoch | None = None, keys: Sequence[PartyKeys] | None = None) -> bytes:
        """Reconstruct the master key the way only a test may (to prove it is unchanged, and to scan for it)."""
        e = epoch or self.epoch
        holders = list(keys or self.keys)[: e.threshold]
        shares = [open_own_share(k, e) for k in holders]
        return shamir.combine(shares, e.threshold)


def open_own_share(keys: PartyKeys, epoch: KeyEpoch) -> shamir.Share:
    enc = epoch.share_of(keys.id)
    assert enc is not None
    return shamir.Share(index=enc.index, value=envelope.open_sealed(
        keys.x25519, enc.sealed, share_aad(epoch.epoch, keys.id, enc.index)))


async def make_guardians(h: Harness, n: int = 10, k: int = 3, prefix: str = "g") -> Guardians:
    keys = [make_keys(f"{prefix}{i}") for i in range(1, n + 1)]
    epoch = await ShelterKeyActivities(h.resources.database).create_key_epoch(
        CreateEpochInput(guardians=[g.public() for g in keys], threshold=k))
    return Guardians(keys=keys, epoch=epoch, requester=make_keys("requester"), outsider=make_keys("outsider"))


async def seed_document(h: Harness, g: Guardians, plaintext: bytes) -> Sheltered:
    return await _seed(h.resources.database, g.epoch, plaintext)


async def answer(handle: WorkflowHandle[Any, Any], keys: PartyKeys, **changes: Any) -> int:
    """Answer as guardian ``keys`` (through the workflow's ``share_task`` query, as the CLI does)."""
    sub = await submission(handle, keys, **changes)
    result: int = await handle.execute_update("submit_share", sub, result_type=int)
    return result


async def submission(handle: WorkflowHandle[Any, Any], keys: PartyKeys, **changes: Any) -> ShareSubmission:
    task = await handle.query("share_task", keys.id, result_type=ShareTask)
    assert task is not None, f"{keys.id} has no share task"
    return answer_share(keys, task).model_copy(update=changes)


async def refused(handle: WorkflowHandle[Any, Any], update: str, arg: Any) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(update, arg, result_type=int)
    assert isinstance(exc.value.cause, ApplicationError)
    return exc.value.cause
