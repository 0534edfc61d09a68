"""Hostile tests: nobody who merely reaches Temporal can start a key ceremony that replaces the shelter's guardians.

One class per rule (docs/security.md). The genesis ceremony is allowed only while no key epoch exists (checked in
the workflow, and atomically where the epoch is stored, so two racing genesis starts cannot both win); after that a
ceremony is refused ``UNAUTHORISED`` (new guardian sets come through a DAO-approved rotation) unless k guardians of
the current epoch signed this very ceremony (guardians, k and epoch key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.shelter_keys import create_ceremony_epoch
from activities.sql.key_epoch_store import KeyEpochStore
from tests.workflows.conftest import Harness
from westworld.errors import UNAUTHORISED, WestworldError
from westworld.shelter import CeremonyApproval, CreateEpochInput, KeyEpoch, ceremony_digest, check_ceremony
from workers.cli.shelter_keys import PartyKeys, make_keys
from workflows.key_ceremony import KeyCeremonyWorkflow

GUARDIANS = [make_keys(f"g{i}") for i in range(1, 6)]
ATTACKERS = [make_keys(f"mallory{i}") for i in range(1, 4)]


def ceremony(parties: list[PartyKeys], signers: Sequence[PartyKeys] = (), k: int = 3, key: str | None = None,
             digest_of: list[PartyKeys] | None = None) -> CreateEpochInput:
    key = key or f"ceremony-{uuid.uuid4().hex[:12]}"
    signed = ceremony_digest([p.public() for p in (digest_of or parties)], k, key)
    return CreateEpochInput(guardians=[p.public() for p in parties], threshold=k, epoch_key=key,
                            approvals=[CeremonyApproval(guardian_id=s.id, signature=s.sign(signed)) for s in signers])


async def run(h: Harness, inp: CreateEpochInput) -> KeyEpoch:
    epoch: KeyEpoch = await h.client.execute_workflow(KeyCeremonyWorkflow.run, inp, id=f"key-ceremony:{inp.epoch_key}",
                                                      task_queue=h.task_queue)
    return epoch


async def refusal(h: Harness, inp: CreateEpochInput) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as exc:
        await run(h, inp)
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable, cause
    return cause


CURRENT = KeyEpoch.model_validate({
    "epoch": 4, "threshold": 3, "master_public_key": "ab" * 32, "salt": "cd" * 32,
    "guardians": [p.public().model_dump() for p in GUARDIANS], "shares": [], "created_at": "2026-12-07T00:00:00Z"})


class TestOnlyTheGenesisCeremonyOrTheCurrentGuardiansMakeAnEpoch:
    async def test_genesis_is_accepted_then_a_hostile_ceremony_is_refused_naming_the_rotation(
            self, harness: Harness) -> None:
        genesis = await run(harness, ceremony(GUARDIANS))
        assert genesis.epoch == 1 and [g.id for g in genesis.guardians] == [p.id for p in GUARDIANS]
        # the attacker's own guardians, signed by the attacker, an unsigned one, one signed over another ceremony
        for hostile in (ceremony(ATTACKERS, ATTACKERS, k=2), ceremony(ATTACKERS, k=2),
                        ceremony(ATTACKERS, GUARDIANS[:3], k=2, digest_of=GUARDIANS),
                        ceremony(ATTACKERS, GUARDIANS[:2] + ATTACKERS, k=2)):
            err = await refusal(harness, hostile)
            assert err.type == UNAUTHORISED
            assert "key epoch 1 exists" in err.message and "westworld shelter rotate" in err.message
            assert "DAO" in err.message and "signed by 3 of its guardians" in err.message
        assert await KeyEpochStore(harness.resources.database).current() == genesis
        # a retried ceremony (same epoch key) returns its epoch, unchecked and unchanged
        again = ceremony(GUARDIANS, key=genesis.epoch_key)
        assert await run(harness, again) == genesis

    async def test_two_racing_genesis_ceremonies_cannot_both_win(self, harness: Harness) -> None:
        handles = [await harness.client.start_workflow(KeyCeremonyWorkflow.run, inp, id=f"key-ceremony:{inp.epoch_key}",
                                                       task_queue=harness.task_queue)
                   for inp in (ceremony(GUARDIANS), ceremony(ATTACKERS, k=2))]
        results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        won = [r for r in results if isinstance(r, KeyEpoch)]
        lost = [r for r in results if not isinstance(r, KeyEpoch)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], WorkflowFailureError) and isinstance(lost[0].cause, ApplicationError)
        assert lost[0].cause.type == UNAUTHORISED
        assert (await KeyEpochStore(harness.resources.database).status()).latest == 1

    async def test_a_fresh_ceremony_needs_k_signatures_of_the_current_guardians(self, harness: Harness) -> None:
        await run(harness, ceremony(GUARDIANS))
        err = await refusal(harness, ceremony(ATTACKERS, GUARDIANS[:2], k=2))
        assert err.type == UNAUTHORISED and "2 valid approval(s)" in err.message
        fresh = await run(harness, ceremony(ATTACKERS, GUARDIANS[2:5], k=2))
        assert fresh.epoch == 2
        assert await KeyEpochStore(harness.resources.database).current() == fresh
        entry = (await harness.resources.audit.latest(1))[0]
        assert entry.payload["approved_by"] == ["g3", "g4", "g5"] and entry.payload["after_epoch"] == 1

    async def test_the_store_refuses_what_the_workflow_would(self, harness: Harness) -> None:
        store = KeyEpochStore(harness.resources.database)
        raced = await asyncio.gather(*(create_ceremony_epoch(store, ceremony(p, k=2)) for p in (GUARDIANS, ATTACKERS)),
                                     return_exceptions=True)  # both read "no epoch yet"; the primary key decides
        assert sorted(type(r).__name__ for r in raced) == ["KeyEpoch", "PermanentError"], raced
        assert all(r.type == UNAUTHORISED for r in raced if isinstance(r, WestworldError))
        eve = [make_keys("eve1"), make_keys("eve2")]
        with pytest.raises(WestworldError) as exc:
            await create_ceremony_epoch(store, ceremony(eve, eve, k=2))
        assert exc.value.type == UNAUTHORISED and (await store.status()).latest == 1

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(GUARDIANS + ATTACKERS), max_size=8), st.booleans())
    def test_fewer_than_k_current_signatures_never_pass(self, signers: list[PartyKeys], over_other: bool) -> None:
        """Any mix of signers (repeated, outsiders, signatures over another ceremony) passes only with k current
        guardians' signatures over this ceremony."""
        inp = ceremony(ATTACKERS, signers, k=2, digest_of=GUARDIANS if over_other else None)
        valid = {s.id for s in signers if s in GUARDIANS} if not over_other else set()
        if len(valid) >= CURRENT.threshold:
            assert check_ceremony(inp, inp.epoch_key or "", CURRENT, True) == sorted(valid)
        else:
            with pytest.raises(WestworldError) as exc:
                check_ceremony(inp, inp.epoch_key or "", CURRENT, True)
            assert exc.value.type == UNAUTHORISED
