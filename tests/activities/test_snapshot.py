"""Snapshot adapter: what we send to a hub and how we read its answers.

No Snapshot hub can run on this machine (it needs the internet, MySQL and Snapshot's own services, none of
which are installable here). These tests therefore run against :class:`RecordingHub`, a small local aiohttp
server that records requests and returns canned hub-shaped answers. It is NOT a Snapshot hub: it checks what we
send (signatures recover to the right address, the voter's signature is forwarded untouched, the GraphQL query)
and how we parse answers and refusals, not that a real hub accepts our messages. The one thing checked against
Snapshot itself is offline: our EIP-712 type lists hash to entries of the sequencer's accepted-types list.
The tests at the end run against a real hub only when ``WESTWORLD_SNAPSHOT_TEST_HUB`` names one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from temporalio.exceptions import ApplicationError

from activities.snapshot import SCORES_QUERY, SnapshotActivities, SnapshotClient
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.snapshot_hub import RecordingHub
from westworld import ballot
from westworld.errors import SNAPSHOT_REJECTED, SNAPSHOT_UNKNOWN_PROPOSAL, VOTE_BAD_SIGNATURE, WestworldError
from westworld.snapshot import (
    SnapshotProposalInput,
    SnapshotProposalRef,
    SnapshotVoteInput,
    message_id,
    proposal_typed_data,
    sequencer_types_hash,
)
from westworld.vote import VoteBackend, VoteRequest

AUTHOR = Account.create("snapshot author")
VOTER = Account.create("snapshot voter")
MALLORY = Account.create("snapshot mallory")
SPACE = "westworld.eth"
HUB_ID = "0x" + "ab" * 32
IPFS = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"

# From snapshot-labs/snapshot.js src/sign/hashedTypes.json (commit efa5de15), the list the sequencer
# (snapshot-sequencer src/ingestor.ts) checks sha256(JSON.stringify(types)) against: "proposal" with
# `address from` and labels, and "vote" with `address from`, uint32 choice, reason, app, metadata.
ACCEPTED_PROPOSAL_TYPES = "beda1f464a6112f9ed6335c4614e32a97f0e18ef4ac10b4b1c8239c475f2d8e8"
ACCEPTED_VOTE_TYPES = "c2e77cabf40490a8419d35b47bee2dc9f7759f004d51404ba617e7c4b14eb4ec"


@pytest.fixture
async def client(hub: RecordingHub) -> AsyncIterator[SnapshotClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield SnapshotClient(http, hub.url, hub.url, SPACE, AUTHOR.key.hex())


def proposal(**kw: Any) -> SnapshotProposalInput:
    fields: dict[str, Any] = {
        "space": SPACE,
        "title": "Set mesh MTU to 1400",
        "body": "Evidence: ...",
        "choices": ["for", "against"],
        "start": 1_700_000_000,
        "end": 1_700_259_200,
        "snapshot_block": 19_000_000,
        "timestamp": 1_699_999_990,
    }
    return SnapshotProposalInput(**{**fields, **kw})


def signed_vote(key: str = VOTER.key.hex()) -> tuple[dict[str, Any], str]:
    ctx = ballot.BallotContext(
        backend=VoteBackend.SNAPSHOT,
        chain_id=1,
        proposal_id="mesh-mtu-1400",
        choices=["for", "against"],
        snapshot_space=SPACE,
        snapshot_proposal=HUB_ID,
    )
    vote = VoteRequest(
        proposal_id="mesh-mtu-1400",
        voter=VOTER.address,
        choice="against",
        signature="0x",
        reason="too small",
        timestamp=1_700_000_100,
    )
    return ballot.typed_data(vote, ctx), ballot.sign(vote, ctx, key)


def recover(data: dict[str, Any], sig: str) -> str:
    """The signer of a sequencer envelope's ``data``, rebuilt the way a hub reads it (domain, types, message)."""
    signable = encode_typed_data(domain_data=data["domain"], message_types=data["types"], message_data=data["message"])
    return str(Account.recover_message(signable, signature=bytes.fromhex(sig.removeprefix("0x"))))


def test_our_types_are_in_the_sequencers_accepted_list() -> None:
    assert sequencer_types_hash(proposal_typed_data(proposal(), AUTHOR.address, 1)["types"]) == ACCEPTED_PROPOSAL_TYPES
    assert sequencer_types_hash(signed_vote()[0]["types"]) == ACCEPTED_VOTE_TYPES


async def test_proposal_envelope_is_signed_by_the_author(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/", 200, {"id": HUB_ID, "ipfs": IPFS, "relayer": {"address": "0x0", "receipt": "0x0"}})

    ref = await client.create_proposal(proposal())

    assert ref == SnapshotProposalRef(id=HUB_ID, ipfs=IPFS)
    [(path, body)] = hub.requests
    assert path == "/"
    assert set(body) == {"address", "sig", "data"}
    assert set(body["data"]) == {"domain", "types", "message"}
    assert body["data"]["domain"] == {"name": "snapshot", "version": "0.1.4"}
    assert list(body["data"]["types"]) == ["Proposal"]
    assert body["address"] == AUTHOR.address
    assert recover(body["data"], body["sig"]) == AUTHOR.address
    message = body["data"]["message"]
    assert (message["from"], message["space"], message["timestamp"]) == (AUTHOR.address, SPACE, 1_699_999_990)
    assert (message["choices"], message["snapshot"], message["type"]) == (
        ["for", "against"],
        19_000_000,
        "single-choice",
    )


async def test_vote_forwards_the_voters_own_signature(hub: RecordingHub, client: SnapshotClient) -> None:
    data, signature = signed_vote()
    hub.answer("/", 200, {"id": "0x" + "cd" * 32, "ipfs": IPFS})

    assert await client.submit_vote(data, VOTER.address, signature) == "0x" + "cd" * 32

    [(_, body)] = hub.requests
    assert body["sig"] == signature
    assert body["address"] == VOTER.address
    assert body["data"]["message"] == data["message"]
    assert "EIP712Domain" not in body["data"]["types"]
    assert recover(body["data"], body["sig"]) == VOTER.address


async def test_vote_signed_by_someone_else_is_not_sent(hub: RecordingHub, client: SnapshotClient) -> None:
    data, forged = signed_vote(key=MALLORY.key.hex())

    with pytest.raises(WestworldError, match="not by voter") as err:
        await client.submit_vote(data, VOTER.address, forged)

    assert err.value.type == VOTE_BAD_SIGNATURE
    assert hub.requests == []


async def test_hub_refusal_is_permanent_and_names_the_reason(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/", 400, {"error": "client_error", "error_description": "validation failed"})

    with pytest.raises(ApplicationError, match="validation failed") as err:
        await InterceptedEnvironment().run(SnapshotActivities(client).create_proposal, proposal())

    assert err.value.type == SNAPSHOT_REJECTED
    assert err.value.non_retryable
    assert SPACE in str(err.value)


async def test_vote_refusal_is_permanent(hub: RecordingHub, client: SnapshotClient) -> None:
    data, signature = signed_vote()
    hub.answer("/", 400, {"error": "client_error", "error_description": "no voting power"})

    with pytest.raises(ApplicationError, match="no voting power") as err:
        await InterceptedEnvironment().run(
            SnapshotActivities(client).submit_vote,
            SnapshotVoteInput(typed_data=data, voter=VOTER.address, signature=signature),
        )

    assert (err.value.type, err.value.non_retryable) == (SNAPSHOT_REJECTED, True)


async def test_duplicate_means_already_published(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/", 400, {"error": "client_error", "error_description": "duplicate message"})
    inp = proposal()

    ref = await client.create_proposal(inp)

    assert ref == SnapshotProposalRef(id=message_id(proposal_typed_data(inp, AUTHOR.address, 1_699_999_990)))


async def test_retries_sign_the_same_message(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/", 503, "<html>maintenance</html>")
    hub.answer("/", 200, {"id": HUB_ID, "ipfs": IPFS})
    env, acts = InterceptedEnvironment(), SnapshotActivities(client)
    scheduled = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    env.info = dataclasses.replace(env.info, scheduled_time=scheduled)

    with pytest.raises(httpx.HTTPStatusError):
        await env.run(acts.create_proposal, proposal(timestamp=None))
    env.info = dataclasses.replace(env.info, attempt=2, current_attempt_scheduled_time=scheduled + timedelta(hours=1))
    await env.run(acts.create_proposal, proposal(timestamp=None))

    first, second = (body for _, body in hub.requests)
    assert first["data"]["message"]["timestamp"] == int(scheduled.timestamp())
    assert first == second


@pytest.mark.parametrize("status", [425, 429, 500, 502])
async def test_busy_or_failing_hub_is_retried(hub: RecordingHub, client: SnapshotClient, status: int) -> None:
    hub.answer("/", status, {"error": "server_error", "error_description": "busy"})

    with pytest.raises(httpx.HTTPStatusError):
        await InterceptedEnvironment().run(SnapshotActivities(client).create_proposal, proposal())


async def test_unreachable_hub_is_retried() -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        client = SnapshotClient(http, "http://127.0.0.1:9", "http://127.0.0.1:9", SPACE, AUTHOR.key.hex())
        with pytest.raises(httpx.ConnectError):
            await InterceptedEnvironment().run(SnapshotActivities(client).scores, HUB_ID)


async def test_proposal_for_another_space_is_refused(hub: RecordingHub, client: SnapshotClient) -> None:
    with pytest.raises(ApplicationError, match=r"other\.eth") as err:
        await InterceptedEnvironment().run(SnapshotActivities(client).create_proposal, proposal(space="other.eth"))

    assert err.value.non_retryable
    assert hub.requests == []


async def test_scores_query_and_answer(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer(
        "/graphql",
        200,
        {
            "data": {
                "proposal": {
                    "id": HUB_ID,
                    "scores": [1200.5, 300],
                    "scores_total": 1500.5,
                    "votes": 7,
                    "state": "closed",
                }
            }
        },
    )

    scores = await client.scores(HUB_ID)

    assert (scores.scores, scores.scores_total, scores.votes, scores.state) == ([1200.5, 300.0], 1500.5, 7, "closed")
    [(path, body)] = hub.requests
    assert path == "/graphql"
    assert body == {"query": SCORES_QUERY, "variables": {"id": HUB_ID}}
    assert "proposal(id: $id) { id scores scores_total votes state }" in body["query"]


async def test_pending_proposal_without_scores(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer(
        "/graphql",
        200,
        {"data": {"proposal": {"id": HUB_ID, "scores": [], "scores_total": None, "votes": 0, "state": "pending"}}},
    )

    scores = await client.scores(HUB_ID)

    assert (scores.scores, scores.scores_total, scores.votes, scores.state) == ([], 0.0, 0, "pending")


async def test_unknown_proposal(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/graphql", 200, {"data": {"proposal": None}})

    with pytest.raises(ApplicationError, match="unknown Snapshot proposal") as err:
        await InterceptedEnvironment().run(SnapshotActivities(client).scores, HUB_ID)

    assert (err.value.type, err.value.non_retryable) == (SNAPSHOT_UNKNOWN_PROPOSAL, True)


async def test_graphql_errors_are_a_refusal(hub: RecordingHub, client: SnapshotClient) -> None:
    hub.answer("/graphql", 400, {"errors": [{"message": 'Cannot query field "votez" on type "Proposal".'}]})

    with pytest.raises(WestworldError, match="votez") as err:
        await client.scores(HUB_ID)

    assert err.value.type == SNAPSHOT_REJECTED


LIVE_HUB = os.environ.get("WESTWORLD_SNAPSHOT_TEST_HUB", "")
LIVE_SPACE = os.environ.get("WESTWORLD_SNAPSHOT_TEST_SPACE", "")
NO_HUB = "no Snapshot hub can run on this machine; set WESTWORLD_SNAPSHOT_TEST_HUB to run against one"


def live_sequencer() -> str:
    # snapshot.js maps hub to sequencer the same way (hub.snapshot.org -> seq.snapshot.org).
    return os.environ.get("WESTWORLD_SNAPSHOT_TEST_SEQUENCER") or LIVE_HUB.replace("hub.", "seq.")


@pytest.mark.skipif(not LIVE_HUB, reason=NO_HUB)
async def test_real_hub_accepts_the_scores_query() -> None:
    """Against a real hub (e.g. https://testnet.hub.snapshot.org): the query fits its GraphQL schema (a schema
    mismatch would come back as GraphQL errors, not as an unknown proposal)."""
    async with httpx.AsyncClient(timeout=30) as http:
        client = SnapshotClient(http, LIVE_HUB, live_sequencer(), SPACE, Account.create().key.hex())
        with pytest.raises(WestworldError, match="unknown Snapshot proposal"):
            await client.scores("0x" + "00" * 32)


@pytest.mark.skipif(
    not (LIVE_HUB and LIVE_SPACE), reason=NO_HUB + " and WESTWORLD_SNAPSHOT_TEST_SPACE to an existing space"
)
async def test_real_sequencer_gets_past_format_types_and_signature() -> None:
    """A throwaway key proposes to an existing space: the sequencer checks envelope format, timestamp, domain,
    types and signature before it checks who may propose, so a refusal for any later reason (or an accepted
    proposal, if the space lets anyone propose) shows those first checks passed."""
    async with httpx.AsyncClient(timeout=30) as http:
        client = SnapshotClient(http, LIVE_HUB, live_sequencer(), LIVE_SPACE, Account.create().key.hex())
        now = int(time.time())
        inp = proposal(
            space=LIVE_SPACE,
            title="westworld adapter check (please ignore)",
            start=now,
            end=now + 3600,
            snapshot_block=0,
            timestamp=None,
        )
        refusal = ""
        try:
            await client.create_proposal(inp)
        except WestworldError as err:
            refusal = err.message
    early = (
        "wrong envelope format",
        "wrong timestamp",
        "wrong domain",
        "wrong types",
        "signature validation failed",
        "unknown space",
    )
    assert not [reason for reason in early if reason in refusal], refusal
