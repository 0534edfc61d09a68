"""EmergencyAccessWorkflow on a real Temporal server, anvil and SQLite, with reminders POSTed to a real local webhook
receiver (aiohttp); the 2-hour window and the reminder interval are time-skipped, never slept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import Guardians, answer, make_guardians, seed_document
from tests.workflows.shelter_seed import Sheltered
from westworld.keys import access_id, access_proposal_id, vote_id
from westworld.shelter_access import (
    AccessDecision,
    AccessRequest,
    AccessResult,
    EmergencyAccessInput,
    VoteTerms,
    open_document,
    reconstruct_master_key,
)
from westworld.vote import DaoVoteResult, VoteState
from workers.stack import processes
from workflows.dao_vote import DaoVoteWorkflow
from workflows.emergency_access import EmergencyAccessWorkflow

EmergencyHandle = WorkflowHandle[EmergencyAccessWorkflow, AccessResult]


class Receiver:
    """A real HTTP webhook receiver: what the notify activity POSTed."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.notices.append(await request.json())
        return web.json_response({"ok": True})


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, Receiver]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = processes.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}/hook", receiver
    await runner.cleanup()


@pytest.fixture
def settings_overrides(webhook: tuple[str, Receiver]) -> dict[str, Any]:
    return {"notify_webhook_url": webhook[0]}


async def start(h: Harness, g: Guardians, doc: Sheltered, **kw: Any) -> EmergencyHandle:
    req = AccessRequest(request_id=f"em-{uuid.uuid4().hex[:10]}", document_id=doc.record.document_id,
                        requester="activist", requester_public_key=g.requester.public().encryption_public_key,
                        reason="a raid is expected tonight")
    inp = EmergencyAccessInput(request=req, vote=VoteTerms(voting_window=timedelta(hours=1)), **kw)
    handle = await h.skipper.client.start_workflow(
        EmergencyAccessWorkflow.run, inp, id=access_id(req.request_id, emergency=True), task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    await eventually(lambda: handle.query(EmergencyAccessWorkflow.status),
                     lambda s: s.decision is AccessDecision.COLLECTING)
    return handle


async def vote_for(h: Harness, handle: EmergencyHandle, choice: str) -> WorkflowHandle[DaoVoteWorkflow, DaoVoteResult]:
    from tests.workflows.test_dao_vote import vote

    req_id = handle.id.split(":", 1)[1]
    vote_handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = h.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, vote_id(access_proposal_id(req_id, emergency=True)))
    await eventually(lambda: vote_handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    await vote(vote_handle, h.voters[30], choice)
    return vote_handle


async def test_emergency_access_opens_within_the_window(harness: Harness, webhook: tuple[str, Receiver]) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"names and safe houses")
    handle = await start(harness, g, doc)
    # guardians approve while the vote runs
    for keys in g.keys[4:7]:
        await answer(handle, keys)
    vote_handle = await vote_for(harness, handle, "for")
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=1, minutes=1))
    result = await handle.result()
    assert result.decision is AccessDecision.GRANTED and result.vote and result.vote.decision == "approved"
    master = reconstruct_master_key(g.requester.x25519, result, handle.id)
    assert result.document is not None
    assert open_document(master, result.document, doc.blob) == b"names and safe houses"
    first = webhook[1].notices[0]
    assert first["request_id"] == result.request.request_id and first["kind"] == "emergency"
    assert len(first["guardians"]) == 10 and first["reminder"] == 0
    entries = await harness.resources.audit.latest(3)
    assert [e.kind for e in entries if e.subject == result.request.request_id] == [
        "shelter.emergency.requested", "shelter.emergency.granted"]


async def test_reminders_go_to_silent_guardians_and_expiry_denies(harness: Harness,
                                                                  webhook: tuple[str, Receiver]) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    handle = await start(harness, g, doc, reminder_every=timedelta(minutes=10))
    await eventually(lambda: _notices(webhook[1], handle), lambda n: len(n) >= 1)
    await answer(handle, g.keys[0])
    await answer(handle, g.keys[1])
    # the vote approves (its own window skipped); the server skips a parent's time only once its child is done
    vote_handle = await vote_for(harness, handle, "for")
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=1, minutes=1))
    await eventually(lambda: handle.query(EmergencyAccessWorkflow.status), lambda s: s.vote_decision == "approved")
    await harness.skipper.fast_forward(handle, timedelta(minutes=10, seconds=30))
    notices = await eventually(lambda: _notices(webhook[1], handle), lambda n: len(n) >= 2)
    assert notices[1]["reminder"] == 1 and sorted(notices[1]["guardians"]) == sorted(k.id for k in g.keys[2:])
    await harness.skipper.fast_forward(handle, timedelta(hours=2))
    result = await handle.result()
    assert result.decision is AccessDecision.EXPIRED and result.shares == []
    assert "2/3" in result.reason
    entry = next(e for e in await harness.resources.audit.latest(2) if e.subject == result.request.request_id)
    assert entry.kind == "shelter.emergency.expired" and entry.payload["guardians"] == ["g1", "g2"]


async def _notices(receiver: Receiver, handle: EmergencyHandle) -> list[dict[str, Any]]:
    return [n for n in receiver.notices if n["workflow_id"] == handle.id]


async def test_a_rejected_emergency_vote_denies_even_with_shares(harness: Harness) -> None:
    g = await make_guardians(harness)
    doc = await seed_document(harness, g, b"unused")
    handle = await start(harness, g, doc)
    for keys in g.keys[:3]:
        await answer(handle, keys)
    vote_handle = await vote_for(harness, handle, "against")
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=1, minutes=1))
    result = await handle.result()
    assert result.decision is AccessDecision.DENIED and result.shares == []
