"""The snapshot backend of DaoVoteWorkflow, end to end on real Temporal and anvil, against a RecordingHub.

No Snapshot hub can run on this machine. The RecordingHub (tests/fixtures/snapshot_hub.py) is NOT a hub: it
records what the workflow publishes and answers with canned hub-shaped responses, so these tests check what
we send (the proposal envelope, each voter's own signed Vote) and how answers are used, never that a real hub
accepts them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from tests.fixtures.snapshot_hub import RecordingHub
from tests.workflows.conftest import Harness, eventually
from westworld import ballot
from westworld.keys import vote_id
from westworld.vote import DaoVoteInput, Proposal, VoteBackend, VoteRequest, VoteState
from workflows.dao_vote import DaoVoteWorkflow

SCORES = {"data": {"proposal": {"id": "0xprop", "scores": [30.0, 10.0], "scores_total": 40.0, "votes": 2,
                                "state": "closed"}}}


@pytest.fixture
def settings_overrides(hub: RecordingHub) -> dict[str, Any]:
    return {"snapshot_hub_url": hub.url, "snapshot_sequencer_url": hub.url}


async def test_snapshot_vote_publishes_proposal_and_ballots_and_reads_scores(
    harness: Harness, hub: RecordingHub
) -> None:
    hub.answer("/", 200, {"id": "0xprop", "ipfs": "bafy-proposal"})
    hub.answer("/", 200, {"id": "0xvote1"})
    hub.answer("/", 400, {"error": "client_error", "error_description": "no voting power"})
    hub.answer("/graphql", 200, SCORES)
    pid = f"snap-{uuid.uuid4().hex[:8]}"
    inp = DaoVoteInput(proposal=Proposal(id=pid, title="Open the relay", choices=["for", "against"]),
                       backend=VoteBackend.SNAPSHOT, early_close=False)
    handle = await harness.skipper.client.start_workflow(
        DaoVoteWorkflow.run, inp, id=vote_id(pid), task_queue=harness.task_queue)
    await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    assert ctx.snapshot_proposal == "0xprop"

    signed = []
    for voter in harness.voters[7:9]:
        v = VoteRequest(proposal_id=pid, voter=voter.address, choice="for", signature="0x", timestamp=1_800_000_000)
        signed.append(v.model_copy(update={"signature": ballot.sign(v, ctx, voter.key.hex())}))
    await handle.execute_update(DaoVoteWorkflow.cast_vote, signed[0])
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(DaoVoteWorkflow.cast_vote, signed[1])
    assert isinstance(exc.value.cause, ApplicationError)
    assert exc.value.cause.type == "SnapshotRejected"
    assert "no voting power" in exc.value.cause.message
    assert await harness.resources.votes.count(pid) == 1  # the refused ballot is not kept here either

    await harness.skipper.fast_forward(handle, timedelta(hours=73))
    result = await handle.result()
    assert (result.snapshot_proposal, result.snapshot_scores, result.votes) == ("0xprop", [30.0, 10.0], 1)

    (p_path, proposal), (v_path, vote) = hub.requests[0], hub.requests[1]
    assert (p_path, v_path) == ("/", "/")
    assert proposal["data"]["message"]["space"] == "westworld.eth"
    assert proposal["data"]["message"]["title"] == "Open the relay"
    assert vote["sig"] == signed[0].signature
    assert vote["data"]["message"]["proposal"] == "0xprop"
    assert vote["address"].lower() == signed[0].voter
