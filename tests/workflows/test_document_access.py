"""DocumentAccessWorkflow on a real Temporal server, anvil and SQLite; the 72 h vote and the share window are
time-skipped. The test plays the guardians (through the workflow's query and update, as the CLI does) and the
requester, who reconstructs the key locally."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import (
    Guardians,
    answer,
    make_guardians,
    refused,
    seed_document,
    submission,
)
from tests.workflows.shelter_seed import Sheltered
from westworld import envelope
from westworld.errors import (
    ACCESS_NOT_APPROVED,
    SHARE_BAD_COMMITMENT,
    SHARE_BAD_SIGNATURE,
    SHARE_DUPLICATE,
    SHARE_NOT_GUARDIAN,
    SHARE_WINDOW_CLOSED,
    DecryptFailed,
    InvalidShare,
)
from westworld.keys import access_id, access_proposal_id, vote_id
from westworld.shelter_access import (
    AccessDecision,
    AccessRequest,
    AccessResult,
    DocumentAccessInput,
    VoteTerms,
    handoff_aad,
    open_document,
    reconstruct_master_key,
    submission_digest,
)
from westworld.vote import DaoVoteResult, VoteState
from workflows.dao_vote import DaoVoteWorkflow
from workflows.document_access import DocumentAccessWorkflow

AccessHandle = WorkflowHandle[DocumentAccessWorkflow, AccessResult]


async def start(h: Harness, g: Guardians, doc: Sheltered, **kw: Any) -> AccessHandle:
    req = AccessRequest(request_id=f"rq-{uuid.uuid4().hex[:10]}", document_id=doc.record.document_id,
                        requester="journalist", requester_public_key=g.requester.public().encryption_public_key,
                        reason="public-interest investigation")
    inp = DocumentAccessInput(request=req, vote=VoteTerms(), **kw)  # the policy's terms
    return await h.skipper.client.start_workflow(
        DocumentAccessWorkflow.run, inp, id=access_id(req.request_id), task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def decide_vote(h: Harness, handle: AccessHandle, choice: str) -> WorkflowHandle[DaoVoteWorkflow, DaoVoteResult]:
    from tests.workflows.test_dao_vote import vote

    await eventually(lambda: handle.query(DocumentAccessWorkflow.status), lambda s: s.decision is AccessDecision.VOTING)
    vote_handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = h.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, vote_id(access_proposal_id(handle.id.split(':', 1)[1])))
    await eventually(lambda: vote_handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    await vote(vote_handle, h.voters[30], choice)
    await h.skipper.fast_forward(vote_handle, timedelta(hours=72, minutes=1))
    return vote_handle


async def approved(h: Harness, g: Guardians, doc: Sheltered, **kw: Any) -> AccessHandle:
    handle = await start(h, g, doc, **kw)
    await decide_vote(h, handle, "for")
    await eventually(lambda: handle.query(DocumentAccessWorkflow.status),
                     lambda s: s.decision is AccessDecision.COLLECTING)
    return handle


async def test_approved_request_is_opened_locally_by_the_requester(harness: Harness) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"the minutes of the 2026 assembly")
    handle = await approved(harness, g, doc)
    assert (await handle.query(DocumentAccessWorkflow.status)).step == "collecting shares: 0/3"
    notices = harness.settings.data_dir / "shelter" / "notifications.jsonl"  # no webhook set: the file
    first = await eventually(lambda: _notices(notices, handle.id), lambda n: len(n) >= 1)
    assert len(first[0]["guardians"]) == 10 and "approved" in first[0]["message"]
    for n, keys in enumerate(g.keys[7:10], start=1):
        assert await answer(handle, keys) == n
    result = await handle.result()
    assert result.decision is AccessDecision.GRANTED and {s.guardian_id for s in result.shares} == {"g8", "g9", "g10"}
    master = reconstruct_master_key(g.requester.x25519, result, handle.id)
    assert result.document is not None
    assert open_document(master, result.document, doc.blob) == b"the minutes of the 2026 assembly"
    # only the requester's key opens the shares
    with pytest.raises(DecryptFailed, match="share"):
        reconstruct_master_key(g.outsider.x25519, result, handle.id)
    # a tampered ciphertext is refused, naming the document
    tampered = doc.blob[:-1] + bytes([doc.blob[-1] ^ 1])
    with pytest.raises(DecryptFailed, match=doc.record.document_id):
        open_document(master, result.document, tampered)
    kinds = [(e.kind, e.subject) for e in await harness.resources.audit.latest(3)]
    assert kinds[-1] == ("shelter.access.granted", result.request.request_id)
    assert ("vote.result", access_proposal_id(result.request.request_id)) in kinds


async def test_bad_shares_are_refused_with_the_reason(harness: Harness) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    handle = await start(harness, g, doc)
    early = await submission_when_ready(handle, g)
    assert (await refused(handle, "submit_share", early)).type == ACCESS_NOT_APPROVED
    await decide_vote(harness, handle, "for")
    await eventually(lambda: handle.query(DocumentAccessWorkflow.status),
                     lambda s: s.decision is AccessDecision.COLLECTING)
    good = await submission(handle, g.keys[0])
    # a non-guardian (signing its own submission of a real guardian's index)
    outsider = good.model_copy(update={"guardian_id": g.outsider.id})
    err = await refused(handle, "submit_share", outsider)
    assert err.type == SHARE_NOT_GUARDIAN and "outsider" in err.message
    # a wrong commitment
    wrong = good.model_copy(update={"commitment": "ab" * 32})
    assert (await refused(handle, "submit_share", wrong)).type == SHARE_BAD_COMMITMENT
    # a forged signature: g2 signs g1's submission
    forged = good.model_copy(update={"signature": g.keys[1].sign(submission_digest(
        handle.id, handle.id.split(":", 1)[1], good.index, good.commitment, good.sealed))})
    err = await refused(handle, "submit_share", forged)
    assert err.type == SHARE_BAD_SIGNATURE and "'g1'" in err.message
    # a submission made for another request does not verify here (the signature binds the request)
    replay = good.model_copy(update={"signature": g.keys[0].sign(submission_digest(
        "access:other", "other", good.index, good.commitment, good.sealed))})
    assert (await refused(handle, "submit_share", replay)).type == SHARE_BAD_SIGNATURE
    assert await handle.execute_update(DocumentAccessWorkflow.submit_share, good) == 1
    assert (await refused(handle, "submit_share", good)).type == SHARE_DUPLICATE
    status = await handle.query(DocumentAccessWorkflow.status)
    assert status.submitted == ["g1"] and "g1" not in status.waiting_for
    # the window expires with 1/3: expired, nothing released
    late = await submission(handle, g.keys[1])
    await harness.skipper.fast_forward(handle, timedelta(days=7, minutes=1))
    result = await handle.result()
    assert result.decision is AccessDecision.EXPIRED and result.shares == [] and "1/3" in result.reason
    try:
        outcome = (await refused(handle, "submit_share", late)).type
    except RPCError as rpc:
        outcome = SHARE_WINDOW_CLOSED if "completed" in rpc.message else rpc.message
    assert outcome in {SHARE_WINDOW_CLOSED, ACCESS_NOT_APPROVED}


async def _notices(path: Path, workflow_id: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [n for n in map(json.loads, lines) if n["workflow_id"] == workflow_id]


async def submission_when_ready(handle: AccessHandle, g: Guardians) -> Any:
    await eventually(lambda: handle.query(DocumentAccessWorkflow.status), lambda s: s.epoch is not None)
    return await submission(handle, g.keys[0])


async def test_a_wrong_share_is_named_before_combining(harness: Harness) -> None:
    """A guardian who seals garbage under their real commitment passes the server (it never sees shares) but the
    requester's check names that share before combining."""
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    handle = await approved(harness, g, doc)
    await answer(handle, g.keys[0])
    await answer(handle, g.keys[1])
    bad = await submission(handle, g.keys[2])
    garbage = envelope.seal(bytes.fromhex(g.requester.public().encryption_public_key), b"\x00" * 32,
                            handoff_aad(handle.id, bad.index), b"\x01" * 32, b"\x02" * 12)
    digest = submission_digest(handle.id, handle.id.split(":", 1)[1], bad.index, bad.commitment, garbage)
    await handle.execute_update(DocumentAccessWorkflow.submit_share,
                                bad.model_copy(update={"sealed": garbage, "signature": g.keys[2].sign(digest)}))
    result = await handle.result()
    with pytest.raises(InvalidShare, match=r"share\(s\) \[3\] do not match") as exc:
        reconstruct_master_key(g.requester.x25519, result, handle.id)
    assert exc.value.indexes == (3,)


async def test_a_rejected_vote_denies_access(harness: Harness) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    handle = await start(harness, g, doc)
    await decide_vote(harness, handle, "against")
    result = await handle.result()
    assert result.decision is AccessDecision.DENIED and result.vote and result.vote.decision == "rejected"
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.kind, entry.payload["vote_decision"]) == ("shelter.access.denied", "rejected")


async def test_an_unknown_document_or_a_repeated_request_is_refused(harness: Harness) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    req = AccessRequest(request_id=f"rq-{uuid.uuid4().hex[:10]}", document_id="no-such-document",
                        requester="journalist", requester_public_key=g.requester.public().encryption_public_key,
                        reason="curiosity")
    handle = await harness.client.start_workflow(DocumentAccessWorkflow.run, DocumentAccessInput(request=req),
                                                 id=access_id(req.request_id), task_queue=harness.task_queue)
    result = await handle.result()
    assert result.decision is AccessDecision.DENIED and "no-such-document is not in the shelter index" in result.reason
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.kind, entry.subject) == ("shelter.access.denied", req.request_id)
    first = await start(harness, g, doc)
    with pytest.raises(WorkflowAlreadyStartedError):
        await harness.client.start_workflow(DocumentAccessWorkflow.run, DocumentAccessInput(
            request=(await first.query(DocumentAccessWorkflow.status)).request), id=first.id,
            task_queue=harness.task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    await first.terminate("test done")
