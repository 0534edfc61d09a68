"""Hostile tests: the shelter's access votes and rotations run under the DAO's policy, and only the DAO changes it.

One class per rule (docs/security.md), each attacking the real workflows on a real Temporal server, anvil and
SQLite, as anyone who reaches Temporal could:

- an access request's vote terms (quorum, approval threshold, window) are the policy's: a requester may ask
  stricter, never looser (``LOOSER_THAN_POLICY`` naming the floor, before anything is done; the CLI refuses
  first with the same words);
- the emergency window, the share window and the reminder period are bounded by the policy;
- a rotation's k is the current epoch's (or the policy's floor), never the starter's, and it never asks fewer
  acknowledgements than k;
- a rotation to a new guardian set (chosen by whoever starts it) needs the DAO's vote before any guardian is
  asked for a share; refreshing the same set needs none;
- the policy changes only by a DAO vote (governor, timelock) that sets its hash on chain: `westworld policy
  propose` writes that vote, and afterwards the worker loads the new file and refuses the old one;
- a refused or failed run is reported with its reason by `westworld shelter status`, never a traceback.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.chain import ChainClient
from activities.policy import DEFAULT_POLICY_FILE, PolicyActivities, read_policy_file
from activities.sql.key_epoch_store import KeyEpochStore
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.workflows.conftest import TOKEN, Harness, eventually
from tests.workflows.shelter_helpers import Guardians, answer, make_guardians, refused, seed_document
from tests.workflows.test_dao_vote import start as start_vote
from tests.workflows.test_dao_vote import vote
from tests.workflows.test_guardian_rotation import _any_submission, decide_guardian_vote
from tests.workflows.test_shelter_cli import cli
from westworld.errors import LOOSER_THAN_POLICY, POLICY_MISMATCH, SHARE_WINDOW_CLOSED, UNAUTHORISED, WestworldError
from westworld.keys import access_id
from westworld.policy import POLICY_HASH_KEY, NetworkPolicy, policy_hash
from westworld.rotation import GuardianRotationInput, RotationPhase, RotationResult
from westworld.shelter_access import (
    AccessDecision,
    AccessRequest,
    AccessResult,
    DocumentAccessInput,
    EmergencyAccessInput,
    VoteTerms,
    access_terms,
)
from westworld.vote import DaoVoteInput, DaoVoteResult, VoteKind
from workers.cli.shelter_keys import make_keys
from workflows.dao_vote import DaoVoteWorkflow
from workflows.document_access import DocumentAccessWorkflow
from workflows.emergency_access import EmergencyAccessWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow

POLICY = read_policy_file(DEFAULT_POLICY_FILE)
SUPPLY = 1_000_000 * TOKEN


def request(g: Guardians, document_id: str) -> AccessRequest:
    return AccessRequest(request_id=f"rq-{uuid.uuid4().hex[:10]}", document_id=document_id, requester="mallory",
                         requester_public_key=g.requester.public().encryption_public_key, reason="I want it")


async def start_access(h: Harness, req: AccessRequest, **kw: Any) -> WorkflowHandle[Any, AccessResult]:
    return await h.client.start_workflow(
        DocumentAccessWorkflow.run, DocumentAccessInput(request=req, **kw), id=access_id(req.request_id),
        task_queue=h.task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)


async def start_emergency(h: Harness, req: AccessRequest, **kw: Any) -> WorkflowHandle[Any, AccessResult]:
    return await h.client.start_workflow(
        EmergencyAccessWorkflow.run, EmergencyAccessInput(request=req, **kw),
        id=access_id(req.request_id, emergency=True),
        task_queue=h.task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)


async def refusal(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The typed error the run failed with."""
    with pytest.raises(WorkflowFailureError) as exc:
        await handle.result()
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.non_retryable
    return cause


async def exists(h: Harness, workflow_id: str) -> bool:
    try:
        await h.client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def nothing_done(h: Harness, req: AccessRequest, vote_id: str) -> None:
    """No vote started and nothing audited for a refused request."""
    assert not await exists(h, vote_id)
    assert all(e.subject != req.request_id for e in await h.resources.audit.latest(50))


async def quorum_weight(h: Harness, req: AccessRequest) -> int:
    """The quorum weight the access request's child vote runs with."""
    access: WorkflowHandle[DocumentAccessWorkflow, AccessResult] = h.client.get_workflow_handle_for(
        DocumentAccessWorkflow.run, access_id(req.request_id))
    await eventually(lambda: access.query(DocumentAccessWorkflow.status), lambda s: s.decision is AccessDecision.VOTING)
    v: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = h.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, f"vote:access-{req.request_id}")
    status = await eventually(lambda: v.query(DaoVoteWorkflow.status), lambda s: s.total_supply > 0,
                              not_yet=(RPCError,))  # the child may not be started the moment the parent says VOTING
    return status.quorum_weight


class TestAccessVoteTermsComeFromPolicy:
    async def test_a_tiny_quorum_is_refused_at_start_naming_the_floor(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        req = request(g, doc.record.document_id)
        handle = await start_access(harness, req, vote=VoteTerms(quorum=Decimal("0.0000001")))
        err = await refusal(handle)
        assert err.type == LOOSER_THAN_POLICY
        assert f"access:{req.request_id}: quorum 1E-7 is looser than the network policy (votes.quorum_min = " \
               f"{POLICY.votes.quorum_min})" in err.message
        await nothing_done(harness, req, f"vote:access-{req.request_id}")

    @pytest.mark.parametrize(("terms", "named"), [
        (VoteTerms(approval_threshold=Decimal("0")), "votes.approval_threshold_min"),
        (VoteTerms(voting_window=timedelta(seconds=1)), "votes.window_min"),
        (VoteTerms(voting_window=timedelta(days=365)), "votes.window_max"),
    ])
    async def test_a_looser_approval_or_window_is_refused(self, harness: Harness, terms: VoteTerms,
                                                          named: str) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        req = request(g, doc.record.document_id)
        err = await refusal(await start_emergency(harness, req, vote=terms))
        assert err.type == LOOSER_THAN_POLICY and named in err.message
        await nothing_done(harness, req, f"vote:emergency-{req.request_id}")

    async def test_the_vote_runs_on_the_policys_terms_or_stricter_ones(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        default = request(g, doc.record.document_id)
        stricter = request(g, doc.record.document_id)
        handles = [await start_access(harness, default), await start_access(
            harness, stricter, vote=VoteTerms(quorum=Decimal("0.5"), approval_threshold=Decimal("0.66")))]
        assert await quorum_weight(harness, default) == SUPPLY * 4 // 100  # the policy's 0.04
        assert await quorum_weight(harness, stricter) == SUPPLY // 2
        for handle in handles:
            await handle.terminate("test done")

    async def test_the_cli_refuses_first_with_the_same_words(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        keys = harness.settings.data_dir / "shelter" / "keys"
        await cli(harness, "shelter", "keygen", "--name", "mallory")
        out = await cli(harness, "shelter", "request", doc.record.document_id, "--reason", "mine",
                        "--key", str(keys / "mallory.key"), "--request-id", "tiny-q", "--quorum", "0.0000001",
                        ok=False)
        assert ("error: access:tiny-q: quorum 1E-7 is looser than the network policy (votes.quorum_min = "
                f"{POLICY.votes.quorum_min})") in out
        assert not await exists(harness, "access:tiny-q")

    @given(quorum=st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal(1), places=9))
    def test_any_quorum_under_the_floor_is_refused_and_any_other_kept_exactly(self, quorum: Decimal) -> None:
        terms = VoteTerms(quorum=quorum)
        if quorum < POLICY.votes.quorum_min:
            with pytest.raises(WestworldError) as exc:
                access_terms(POLICY, "access:x", terms, VoteKind.NORMAL, reminder_every=timedelta(days=1))
            assert exc.value.type == LOOSER_THAN_POLICY
        else:
            got = access_terms(POLICY, "access:x", terms, VoteKind.NORMAL, reminder_every=timedelta(days=1))
            assert got.quorum == quorum and got.approval_threshold == POLICY.votes.approval_threshold_min


class TestAccessWindowsComeFromPolicy:
    @pytest.mark.parametrize(("kw", "named"), [
        ({"window": timedelta(hours=3)}, "shelter.emergency_window_max"),
        ({"reminder_every": timedelta(seconds=1)}, "shelter.reminder_every_min"),
    ])
    async def test_an_emergency_window_or_reminders_beyond_the_policy_are_refused(
        self, harness: Harness, kw: dict[str, Any], named: str,
    ) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        req = request(g, doc.record.document_id)
        err = await refusal(await start_emergency(harness, req, **kw))
        assert err.type == LOOSER_THAN_POLICY and named in err.message
        await nothing_done(harness, req, f"vote:emergency-{req.request_id}")

    async def test_a_share_window_beyond_the_policy_is_refused(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        req = request(g, doc.record.document_id)
        err = await refusal(await start_access(harness, req, share_window=timedelta(days=365)))
        assert err.type == LOOSER_THAN_POLICY and "share_window 365 days" in err.message
        assert "shelter.share_window_max = 7 days" in err.message
        await nothing_done(harness, req, f"vote:access-{req.request_id}")


async def start_rotation(h: Harness, inp: GuardianRotationInput, epoch: int) -> WorkflowHandle[Any, RotationResult]:
    return await h.client.start_workflow(
        GuardianRotationWorkflow.run, inp, id=f"rotation:{epoch}-{uuid.uuid4().hex[:6]}", task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)


def rotation_keys_left(h: Harness) -> list[Path]:
    return list((h.settings.data_dir / "shelter" / "rotation").glob("*.key"))


class TestRotationKIsNeverTheStarters:
    @pytest.mark.parametrize("k", [2, 5])
    async def test_a_starter_chosen_k_is_refused_before_anything_is_done(self, harness: Harness, k: int) -> None:
        g = await make_guardians(harness)  # 3-of-10
        handle = await start_rotation(harness, GuardianRotationInput(threshold=k), g.epoch.epoch)
        err = await refusal(handle)
        assert err.type == (LOOSER_THAN_POLICY if k < 3 else UNAUTHORISED)
        assert f"threshold {k} is not the starter's to choose: k of the new epoch is 3 (key epoch 1's k" in err.message
        current = await KeyEpochStore(harness.resources.database).current()
        assert current is not None and current.epoch == g.epoch.epoch and not current.retired
        assert rotation_keys_left(harness) == []  # not even a rotation key was made

    async def test_fewer_acknowledgements_than_k_are_refused(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        err = await refusal(await start_rotation(harness, GuardianRotationInput(ack_quorum=1), g.epoch.epoch))
        assert err.type == LOOSER_THAN_POLICY and "ack_quorum 1" in err.message

    async def test_a_refresh_keeps_the_current_k(self, harness: Harness) -> None:
        g = await make_guardians(harness, n=4, k=3)
        handle = await start_rotation(harness, GuardianRotationInput(), g.epoch.epoch)
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.COLLECTING)
        assert status.threshold == 3 and status.vote_id is None  # same set: no vote needed
        await handle.terminate("test done")


class TestANewGuardianSetNeedsTheDao:
    async def test_a_set_chosen_by_whoever_starts_the_rotation_gets_no_share_unless_the_dao_approves(
        self, harness: Harness,
    ) -> None:
        g = await make_guardians(harness)
        mallory = [make_keys(f"mallory{i}") for i in range(1, 4)]
        handle = await start_rotation(harness, GuardianRotationInput(new_guardians=[m.public() for m in mallory]),
                                      g.epoch.epoch)
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.VOTING)
        assert status.vote_id is not None and status.new_guardians == ["mallory1", "mallory2", "mallory3"]
        # guardians are asked nothing while the DAO decides, and a share sent anyway is refused
        assert await handle.query(GuardianRotationWorkflow.share_task, g.keys[0].id) is None
        assert (await refused(handle, "submit_share", await _any_submission(handle, g))).type == SHARE_WINDOW_CLOSED
        await decide_guardian_vote(harness, status.vote_id, "against")
        result = await handle.result()
        assert result.phase is RotationPhase.ABANDONED and "ended rejected" in result.reason
        current = await KeyEpochStore(harness.resources.database).current()
        assert current is not None and current.epoch == g.epoch.epoch and not current.retired
        assert rotation_keys_left(harness) == []
        kinds = [e.kind for e in await harness.resources.audit.latest(3)]
        assert kinds == ["shelter.rotation.started", "vote.result", "shelter.rotation.abandoned"]

    async def test_an_approved_set_still_needs_k_current_guardians(self, harness: Harness) -> None:
        g = await make_guardians(harness)
        new = [make_keys(f"n{i}") for i in range(1, 4)]
        handle = await start_rotation(harness, GuardianRotationInput(new_guardians=[n.public() for n in new]),
                                      g.epoch.epoch)
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.VOTING)
        assert status.vote_id is not None
        await decide_guardian_vote(harness, status.vote_id, "for")
        await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                         lambda s: s.phase is RotationPhase.COLLECTING)
        await answer(handle, g.keys[0])
        await harness.skipper.fast_forward(handle, timedelta(days=14, minutes=1))
        result = await handle.result()
        assert result.phase is RotationPhase.ABANDONED and "1/3" in result.reason


class TestPolicyChangesOnlyByADaoVote:
    async def test_an_amendment_is_a_governor_vote_after_which_only_the_new_file_loads(
        self, harness: Harness, chain_isolated: ChainClient, tmp_path: Path,
    ) -> None:
        new_file = tmp_path / "policy.yaml"
        new_file.write_text(DEFAULT_POLICY_FILE.read_text().replace('quorum_min: "0.04"', 'quorum_min: "0.05"'))
        new = read_policy_file(new_file)
        with pytest.raises(ApplicationError) as before:
            await InterceptedEnvironment().run(PolicyActivities(chain_isolated, new_file).load_policy)
        assert before.value.type == POLICY_MISMATCH
        assert (await cli(harness, "policy", "hash", str(new_file))).strip() == policy_hash(new)
        vote_file = tmp_path / "amend.json"
        pid = f"policy-test-{uuid.uuid4().hex[:8]}"
        await cli(harness, "policy", "propose", str(new_file), "--out", str(vote_file), "--id", pid)
        inp = DaoVoteInput.model_validate_json(vote_file.read_text())
        assert inp.backend.value == "governor" and "votes.quorum_min: 0.04 -> 0.05" in inp.proposal.body
        handle = await start_vote(harness, inp)
        ctx = await handle.query(DaoVoteWorkflow.ballot_context)
        assert ctx is not None and ctx.governor is not None
        for voter in harness.voters[20:31]:
            await vote(handle, voter, "for", nonce=await chain_isolated.ballot_nonce(ctx.governor, voter.address))
        await harness.skipper.fast_forward(handle, timedelta(hours=80))
        result = await handle.result()
        assert result.onchain_state == "Executed", result
        assert await chain_isolated.read_parameter(POLICY_HASH_KEY) == policy_hash(new)
        loaded: NetworkPolicy = await InterceptedEnvironment().run(
            PolicyActivities(chain_isolated, new_file).load_policy)
        assert loaded.votes.quorum_min == Decimal("0.05")
        with pytest.raises(ApplicationError) as old:
            await InterceptedEnvironment().run(PolicyActivities(chain_isolated, DEFAULT_POLICY_FILE).load_policy)
        assert old.value.type == POLICY_MISMATCH and policy_hash(new) in str(old.value)
        shown = await cli(harness, "policy", "show", "--file", str(DEFAULT_POLICY_FILE), ok=False)
        assert "MISMATCH" in shown and f"on chain      {policy_hash(new)}" in shown
        assert "in force      yes" in await cli(harness, "policy", "show", "--file", str(new_file))


class TestRefusalsAreReportedNotTracebacks:
    async def test_status_of_a_failed_rotation_and_a_refused_request_names_the_reason(self, harness: Harness) -> None:
        # no key epoch in this data dir: the rotation fails planning
        handle = await start_rotation(harness, GuardianRotationInput(), 1)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        out = await cli(harness, "shelter", "status", handle.id)
        assert f"{handle.id}: failed: (InvalidInput) no active shelter key epoch" in out
        assert "Traceback" not in out
        g = await make_guardians(harness)
        doc = await seed_document(harness, g, b"unused")
        req = request(g, doc.record.document_id)
        await refusal(await start_access(harness, req, vote=VoteTerms(quorum=Decimal("0.001"))))
        out = await cli(harness, "shelter", "status", access_id(req.request_id))
        assert "failed: (LooserThanPolicy)" in out and "votes.quorum_min" in out and "Traceback" not in out
        assert AccessDecision.GRANTED.value not in out
