"""DaoVoteWorkflow on a real Temporal server, real anvil and SQLite; vote windows time-skipped, never slept."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from tests.workflows.conftest import TOKEN, Harness, eventually
from westworld import ballot
from westworld.chain import OnChainCall
from westworld.errors import (
    VOTE_AFTER_DEADLINE,
    VOTE_ALREADY_CAST,
    VOTE_BAD_CHOICE,
    VOTE_BAD_SIGNATURE,
    VOTE_CLOSED,
    VOTE_NO_POWER,
    VOTE_UNKNOWN_PROPOSAL,
)
from westworld.keys import vote_id
from westworld.vote import (
    DaoVoteInput,
    DaoVoteResult,
    Proposal,
    VoteBackend,
    VoteKind,
    VoteReceipt,
    VoteRequest,
    VoteState,
)
from workers.cli.stuck import find_stuck
from workflows.dao_vote import DaoVoteWorkflow

VoteHandle = WorkflowHandle[DaoVoteWorkflow, DaoVoteResult]


def proposal(**kw: object) -> Proposal:
    return Proposal.model_validate({"id": f"p-{uuid.uuid4().hex[:10]}", "title": "Raise the mesh MTU", **kw})


async def start(h: Harness, inp: DaoVoteInput) -> VoteHandle:
    handle = await h.skipper.client.start_workflow(
        DaoVoteWorkflow.run, inp, id=vote_id(inp.proposal.id), task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    return handle


async def sign(handle: VoteHandle, voter: LocalAccount, choice: str, *, key: str | None = None,
               proposal_id: str | None = None, nonce: int = 0) -> VoteRequest:
    # A continued run reads its opening from the store first: None for that instant.
    ctx = await eventually(lambda: handle.query(DaoVoteWorkflow.ballot_context), lambda c: c is not None)
    assert ctx is not None
    v = VoteRequest(proposal_id=proposal_id or ctx.proposal_id, voter=voter.address, choice=choice, signature="0x",
                    nonce=nonce)
    return v.model_copy(update={"signature": ballot.sign(v, ctx, key or voter.key.hex())})


async def vote(handle: VoteHandle, voter: LocalAccount, choice: str, **kw: object) -> VoteReceipt:
    return await handle.execute_update(DaoVoteWorkflow.cast_vote, await sign(handle, voter, choice, **kw))  # type: ignore[arg-type]


async def refused(handle: VoteHandle, request: VoteRequest) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(DaoVoteWorkflow.cast_vote, request)
    assert isinstance(exc.value.cause, ApplicationError)
    return exc.value.cause


async def test_vote_runs_its_72h_window_and_is_audited(harness: Harness) -> None:
    inp = DaoVoteInput(proposal=proposal(), early_close=False)  # quorum and approval: the policy's floors
    handle = await start(harness, inp)
    v = harness.voters
    r1 = await vote(handle, v[0], "for")
    await vote(handle, v[1], "against")
    await vote(handle, v[30], "for")  # the whale: half the supply
    assert r1.weight == 10 * TOKEN
    status = await handle.query(DaoVoteWorkflow.status)
    assert status.tally == {"for": 500_010 * TOKEN, "against": 20 * TOKEN, "abstain": 0}
    assert status.quorum_weight == status.total_supply * 4 // 100  # votes.quorum_min 0.04, exactly
    await harness.skipper.fast_forward(handle, timedelta(hours=72, minutes=1))
    result = await handle.result()
    assert (result.decision, result.votes, result.closed_early) == ("approved", 3, False)
    assert result.quorum_met and result.approve_share == pytest.approx(500_010 / 500_030)
    assert result.rules is not None and (result.rules.quorum, result.rules.approval_threshold) == ("1/25", "1/2")
    report = await harness.resources.audit.verify()
    assert report.ok
    counters = harness.metrics.registry
    assert counters.get_sample_value("westworld_votes_accepted_total") == 3
    assert counters.get_sample_value("westworld_audit_appends_total") == 1
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.seq, entry.kind, entry.subject) == (result.audit_seq, "vote.result", inp.proposal.id)
    assert entry.payload["decision"] == "approved"


async def test_no_quorum_when_too_few_vote(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), kind=VoteKind.EMERGENCY, quorum=0.5))
    await vote(handle, harness.voters[0], "for")
    await harness.skipper.fast_forward(handle, timedelta(hours=2, minutes=1))
    result = await handle.result()
    assert (result.decision, result.quorum_met) == ("no-quorum", False)


async def test_bad_votes_are_refused_with_the_reason(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), kind=VoteKind.EMERGENCY, quorum=0.5))
    alice, bob = harness.voters[3], harness.voters[4]
    forged = await sign(handle, alice, "for", key=bob.key.hex())
    assert (await refused(handle, forged)).type == VOTE_BAD_SIGNATURE
    other = await sign(handle, alice, "for", proposal_id="someone-else")
    assert (await refused(handle, other)).type == VOTE_UNKNOWN_PROPOSAL
    bad_choice = (await sign(handle, alice, "for")).model_copy(update={"choice": "maybe"})
    err = await refused(handle, bad_choice)
    assert err.type == VOTE_BAD_CHOICE and "'maybe'" in err.message
    nobody = Account.create("no tokens")
    err = await refused(handle, await sign(handle, nobody, "for"))
    assert err.type == VOTE_NO_POWER and nobody.address.lower() in err.message
    await vote(handle, alice, "for")
    assert (await refused(handle, await sign(handle, alice, "against"))).type == VOTE_ALREADY_CAST
    status = await handle.query(DaoVoteWorkflow.status)
    assert status.votes == 1 and status.tally["for"] == 40 * TOKEN
    late = await sign(handle, bob, "for")
    await harness.skipper.fast_forward(handle, timedelta(hours=2, minutes=1))
    # Past the deadline the vote closes and the workflow completes; a ballot racing the close is refused by
    # the validator (VoteAfterDeadline / VotingClosed), one arriving after completion by the server.
    outcome: BaseException
    try:
        outcome = await refused(handle, late)
    except RPCError as rpc_err:
        outcome = rpc_err
    assert (isinstance(outcome, ApplicationError) and outcome.type in {VOTE_AFTER_DEADLINE, VOTE_CLOSED}) or (
        isinstance(outcome, RPCError) and "completed" in outcome.message
    )
    assert (await handle.result()).votes == 1


async def test_vote_change_when_the_proposal_allows_it(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(allow_vote_change=True), quorum=0.5))
    voter = harness.voters[5]
    await vote(handle, voter, "for")
    receipt = await vote(handle, voter, "against")
    assert receipt.replaced_choice == "for"
    status = await handle.query(DaoVoteWorkflow.status)
    assert status.tally == {"for": 0, "against": 60 * TOKEN, "abstain": 0} and status.votes == 1
    await handle.terminate("test done")


async def test_duplicate_proposal_start_is_refused(harness: Harness) -> None:
    inp = DaoVoteInput(proposal=proposal(), quorum=0.5)
    handle = await start(harness, inp)
    with pytest.raises(Exception, match="already"):
        await start(harness, inp)
    await handle.terminate("test done")


async def test_continue_as_new_keeps_the_tally_and_refuses_repeats(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), continue_after_votes=10, early_close=False))
    first_run = (await handle.describe()).run_id
    for voter in harness.voters[:25]:
        await vote(handle, voter, "for")
    assert (await handle.describe()).run_id != first_run
    assert (await refused(handle, await sign(handle, harness.voters[0], "against"))).type == VOTE_ALREADY_CAST
    await harness.skipper.fast_forward(handle, timedelta(hours=73))
    result = await handle.result()
    assert result.votes == 25 and result.tally["for"] == sum((i + 1) * 10 * TOKEN for i in range(25))


async def test_history_holds_only_encrypted_payloads(harness: Harness, temporal_client: Client) -> None:
    secret_title = f"secret-title-{uuid.uuid4().hex}"
    handle = await start(harness, DaoVoteInput(proposal=proposal(title=secret_title), quorum=0.5))
    await vote(handle, harness.voters[6], "for", )
    await handle.terminate("test done")
    history = await temporal_client.get_workflow_handle(handle.id).fetch_history()
    raw = history.to_json()
    assert secret_title not in raw and harness.voters[6].address.lower() not in raw.lower()
    payloads: list[Payload] = []
    for event in history.events:
        attrs = event.workflow_execution_started_event_attributes
        payloads.extend(attrs.input.payloads)
    assert payloads and all(p.metadata["encoding"] == b"binary/encrypted" for p in payloads)


async def test_stuck_lists_a_vote_waiting_for_voters(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), quorum=0.5))
    rows = await eventually(
        lambda: find_stuck(harness.settings, timedelta(0), client=harness.client),
        lambda rs: any(r.workflow_id == handle.id for r in rs),
    )
    row = next(r for r in rows if r.workflow_id == handle.id)
    assert row.step == "collecting votes" and row.pending == []
    await handle.terminate("test done")


async def test_governor_vote_executes_through_the_timelock(harness: Harness) -> None:
    key = f"mtu-{uuid.uuid4().hex[:6]}"
    inp = DaoVoteInput(
        proposal=proposal(choices=["against", "for", "abstain"],
                          calls=[OnChainCall(target="MeshConfig", signature="setParameter(string,string)",
                                             args=[key, "1400"])]),
        kind=VoteKind.EMERGENCY, backend=VoteBackend.GOVERNOR, quorum=0.04,
    )
    handle = await start(harness, inp)
    chain = harness.resources.chain
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None and ctx.governor is not None
    # the vote closes a margin (1/50 of what is left, at most 5 min) before the emergency Governor's 2 h end on the
    # chain's clock, so that ballots relayed at close still land in the Governor's voting period
    status = await handle.query(DaoVoteWorkflow.status)
    started = (await handle.describe()).start_time
    assert status.deadline is not None and started is not None
    assert timedelta(hours=2) - timedelta(minutes=10) < status.deadline - started < timedelta(hours=2, seconds=-100)
    for voter in harness.voters[20:31]:
        nonce = await chain.ballot_nonce(ctx.governor, voter.address)
        await vote(handle, voter, "for", nonce=nonce)
    await harness.skipper.fast_forward(handle, timedelta(hours=4))
    result = await handle.result()
    assert result.onchain_state == "Executed" and result.executed_tx
    assert await chain.read_parameter(key) == "1400"
