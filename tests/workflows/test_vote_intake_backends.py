"""The vote intake (POST /v1/votes) for the governor and snapshot backends, against real Temporal, anvil, the
SQLite store and the worker.

Governor (the on-chain Governor and its timelock, on anvil): every accepted ballot is relayed with
``castVoteBySig`` exactly once — checked on the chain (``VoteCast`` events, ``hasVoted``, the voter's ballot nonce)
— however often it is posted or its batch retried, also when the web process is killed after the store committed
it and before its relay reached the chain; the Governor's ``proposalVotes`` equal the workflow's tally at close and
the proposal is queued and executed through the timelock. A ballot the chain could never count (a stale nonce, a
voter who already voted on chain) is refused with a typed reason before anything is stored.

Snapshot: no hub can run here. The RecordingHub (tests/fixtures/snapshot_hub.py) is NOT a hub: it records what
the intake publishes and answers as the test tells it. These tests prove that the intake publishes each accepted
vote to it once, with exactly the typed data the voter signed, and refuses a vote the hub refuses or cannot
take — they do NOT prove that a real Snapshot hub would accept any of these votes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import signal
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from activities.votes import VoteActivities
from tests.fixtures.snapshot_hub import RecordingHub
from tests.workflows.conftest import Harness, eventually
from tests.workflows.intake_support import post_vote, serve_intake, settings_env, spawn, wait_healthy
from tests.workflows.test_dao_vote import VoteHandle, proposal, sign, start
from tests.workflows.test_vote_intake import recount_matches, westworld
from westworld import ballot
from westworld.chain import OnChainCall, RelayVoteInput
from westworld.errors import SNAPSHOT_REJECTED, VOTE_ALREADY_CAST, VOTE_BAD_SIGNATURE, VOTE_UNAVAILABLE
from westworld.keys import vote_id
from westworld.snapshot import envelope
from westworld.vote import (
    GOVERNOR_CHOICES,
    DaoVoteInput,
    Proposal,
    RecordVoteInput,
    RecordVotesInput,
    VoteBackend,
    VoteKind,
    VoteReceipt,
    VoteRequest,
    VoteState,
)
from workers.stack import processes
from workflows.dao_vote import DaoVoteWorkflow

SCORES = {"data": {"proposal": {"id": "0xprop", "scores": [1.0, 0.0], "scores_total": 1.0, "votes": 2,
                                "state": "closed"}}}


@pytest.fixture
def settings_overrides(hub: RecordingHub) -> dict[str, Any]:
    return {"snapshot_hub_url": hub.url, "snapshot_sequencer_url": hub.url}


# --- governor ---------------------------------------------------------------------------------------------------

def governor_vote(key: str) -> DaoVoteInput:
    return DaoVoteInput(
        proposal=proposal(choices=list(GOVERNOR_CHOICES),
                          calls=[OnChainCall(target="MeshConfig", signature="setParameter(string,string)",
                                             args=[key, "1400"])]),
        kind=VoteKind.EMERGENCY, backend=VoteBackend.GOVERNOR, quorum=0.04, early_close=False)


class Governor:
    """The vote's proposal on the Governor, read straight from the chain."""

    def __init__(self, h: Harness, handle: VoteHandle, from_block: int) -> None:
        self.h, self.handle, self.from_block = h, handle, from_block
        self.address, self.onchain_id = "", 0

    async def open(self) -> Governor:
        ctx = await self.handle.query(DaoVoteWorkflow.ballot_context)
        assert ctx is not None and ctx.governor is not None and ctx.onchain_id is not None
        self.address, self.onchain_id = ctx.governor, int(ctx.onchain_id)
        return self

    @property
    def contract(self) -> Any:
        return self.h.resources.chain.governor(self.address)

    async def sign(self, voter: LocalAccount, choice: str, nonce_offset: int = 0) -> VoteRequest:
        nonce = await self.h.resources.chain.ballot_nonce(self.address, voter.address)
        return await sign(self.handle, voter, choice, nonce=nonce + nonce_offset)

    async def has_voted(self, voter: str) -> bool:
        return bool(await self.contract.functions.hasVoted(self.onchain_id, Web3.to_checksum_address(voter)).call())

    async def vote_casts(self) -> Counter[str]:
        """How many times each voter's vote was counted on chain for this proposal (``VoteCast`` events)."""
        logs = await self.contract.events.VoteCast().get_logs(from_block=self.from_block)
        return Counter(str(log["args"]["voter"]).lower() for log in logs
                       if int(log["args"]["proposalId"]) == self.onchain_id)

    async def votes(self) -> dict[str, int]:
        against, for_, abstain = await self.contract.functions.proposalVotes(self.onchain_id).call()
        return {"against": int(against), "for": int(for_), "abstain": int(abstain)}


async def open_governor_vote(h: Harness) -> tuple[DaoVoteInput, VoteHandle, Governor, str]:
    key = f"mtu-{uuid.uuid4().hex[:6]}"
    from_block = int(await h.resources.chain.w3.eth.block_number)
    inp = governor_vote(key)
    handle = await start(h, inp)
    return inp, handle, await Governor(h, handle, from_block).open(), key


async def close_and_check(h: Harness, inp: DaoVoteInput, handle: VoteHandle, gov: Governor, key: str,
                          voters: set[str]) -> dict[str, int]:
    """Past the deadline: the vote closes, the Governor counted exactly the stored ballots, once each, and the
    proposal went through the timelock."""
    await h.skipper.fast_forward(handle, timedelta(hours=3))
    result = await handle.result()
    tally = await recount_matches(h, inp.proposal.id, inp.proposal.choices)
    assert result.tally == tally and result.votes == len(voters)
    assert await gov.votes() == tally  # the chain's count equals the workflow's at close
    assert await gov.vote_casts() == Counter(dict.fromkeys(voters, 1))
    assert result.onchain_state == "Executed" and result.executed_tx
    assert await h.resources.chain.read_parameter(key) == "1400"
    return tally


async def test_governor_ballots_through_the_intake_are_relayed_once_and_executed(harness: Harness) -> None:
    inp, handle, gov, key = await open_governor_vote(harness)
    voters = [*harness.voters[20:27], harness.voters[30]]  # the last: half the supply (quorum, approval)
    stale, cli_voter = harness.voters[27], harness.voters[28]
    choices = ["for", "against", "for", "abstain", "for", "for", "against", "for"]
    ballots = [await gov.sign(v, c) for v, c in zip(voters, choices, strict=True)]
    stale_ballot = await gov.sign(stale, "for", nonce_offset=1)  # not the nonce the Governor expects
    nonces = {v.address: await harness.resources.chain.ballot_nonce(gov.address, v.address)
              for v in [*voters, stale, cli_voter]}
    async with serve_intake(harness) as url, aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(post_vote(http, url, b.model_dump_json()) for b in [*ballots, stale_ballot]))
        assert [a.status for a in answers[:-1]] == [200] * len(ballots), [a.body for a in answers]
        # The stale ballot would revert on chain: refused with its reason, nothing stored, its batch unharmed.
        assert (answers[-1].status, answers[-1].body["type"]) == (400, VOTE_BAD_SIGNATURE), answers[-1].body
        assert "nonce" in answers[-1].body["message"]
        assert not await gov.has_voted(stale.address)
        for b in ballots:  # a receipt means the ballot is on chain
            assert await gov.has_voted(b.voter), b.voter
        # Sent again, ten times at once, and its batch retried as the workflow's local activity retries it:
        # the first receipt each time, nothing relayed again.
        again = await asyncio.gather(*(post_vote(http, url, ballots[0].model_dump_json()) for _ in range(10)))
        assert {(a.status, a.body["vote_hash"]) for a in again} == {(200, answers[0].body["vote_hash"])}
        opened = await harness.resources.votes.intake_proposal(inp.proposal.id)
        assert opened is not None and opened.opening.governor is not None
        retried = RecordVotesInput(votes=[RecordVoteInput(
            request=ballots[0], vote_hash=answers[0].body["vote_hash"], timepoint=opened.opening.snapshot.timepoint,
            allow_change=False, governor=opened.opening.governor, support=GOVERNOR_CHOICES.index(choices[0]))],
            proposal_id=inp.proposal.id, first_run_id=opened.opening.first_run_id)
        activities = VoteActivities(harness.resources.votes, harness.resources.chain)
        for _ in range(2):
            outcome = (await activities.record_votes(retried)).outcomes[0]
            assert outcome.error_type is None and outcome.repeat
        # The stale voter signs again with the right nonce: accepted now.
        fixed = await post_vote(http, url, (await gov.sign(stale, "abstain")).model_dump_json())
        assert fixed.status == 200, fixed.body
        # The CLI reads the voter's nonce from the Governor, signs and posts to the same intake.
        key_file = harness.settings.data_dir / "cli-voter.key"
        key_file.write_text(cli_voter.key.hex())
        out = await westworld(harness, url, "vote", "cast", inp.proposal.id, "--choice", "for", "--key",
                              str(key_file))
        assert "accepted" in out and "note:" not in out, out
    stored = {b.voter for b in ballots} | {stale.address.lower(), cli_voter.address.lower()}
    assert await gov.vote_casts() == Counter(dict.fromkeys(stored, 1))
    for address, nonce in nonces.items():  # each voter's ballot nonce used exactly once
        assert await harness.resources.chain.ballot_nonce(gov.address, address) == nonce + 1
    await close_and_check(harness, inp, handle, gov, key, stored)


async def test_a_voter_who_voted_on_chain_is_refused_not_counted_twice(harness: Harness) -> None:
    """A voter who already voted on the Governor (here: their ballot relayed by someone else) cannot have the
    intake count another choice for them: the chain would keep the first one and the tallies would differ."""
    inp, handle, gov, _ = await open_governor_vote(harness)
    voter = harness.voters[24]
    direct = await gov.sign(voter, "against")
    await harness.resources.chain.relay_vote(RelayVoteInput(
        governor=gov.address, onchain_id=str(gov.onchain_id), support=0, voter=direct.voter,
        signature=direct.signature))
    async with serve_intake(harness) as url, aiohttp.ClientSession() as http:
        other = await post_vote(http, url, (await gov.sign(voter, "for")).model_dump_json())
        assert (other.status, other.body["type"]) == (409, VOTE_ALREADY_CAST), other.body
    assert await harness.resources.votes.count(inp.proposal.id) == 0
    assert await gov.vote_casts() == Counter({direct.voter: 1})
    await handle.terminate("test done")


async def _rpc(h: Harness, method: str, *params: Any) -> Any:
    return await h.resources.chain.w3.provider.make_request(RPCEndpoint(method), list(params))


async def test_a_web_process_killed_between_store_and_relay_neither_loses_nor_doubles_a_relay(
    harness: Harness,
) -> None:
    """The web process runs as `westworld up` starts it and is SIGKILLed while a stored ballot's relay is in
    flight (anvil's automine is off, so the relay waits; its transaction is then dropped, as if it was never sent).
    One voter sends the ballot again after the restart, one never does: both end on chain exactly once, and the
    Governor's count equals the tally at close."""
    s = harness.settings
    inp, handle, gov, key = await open_governor_vote(harness)
    resender, silent, whale = harness.voters[21], harness.voters[22], harness.voters[30]
    resent, lost, big = (await gov.sign(resender, "for"), await gov.sign(silent, "against"),
                         await gov.sign(whale, "for"))
    port = processes.free_port()
    url, log = f"http://127.0.0.1:{port}", s.data_dir / "web.log"
    env = settings_env(s, web_port=port, worker_metrics_port=processes.free_port())
    web = spawn("web", env, log)
    try:
        async with aiohttp.ClientSession() as http:
            for vote in (lost, resent):
                await wait_healthy(http, url, web, log)
                stored = await harness.resources.votes.count(inp.proposal.id)
                await _rpc(harness, "evm_setAutomine", False)
                try:
                    posting = asyncio.ensure_future(post_vote(http, url, vote.model_dump_json()))
                    await eventually(lambda: harness.resources.votes.count(inp.proposal.id),
                                     functools.partial(operator.eq, stored + 1), timeout=30)
                    await eventually(lambda: _rpc(harness, "txpool_status"),
                                     lambda st: int(st["result"]["pending"], 16) == 1, timeout=30)
                    pool = children_of(web.pid)  # its signature-check processes crash with it
                    web.send_signal(signal.SIGKILL)  # committed in the store, its relay not on chain yet
                    web.wait()
                    for pid in pool:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    with pytest.raises(aiohttp.ClientError):
                        await posting
                    await _rpc(harness, "anvil_dropAllTransactions")
                finally:
                    await _rpc(harness, "evm_setAutomine", True)
                assert not await gov.has_voted(vote.voter)
                web = spawn("web", env, log)
            await wait_healthy(http, url, web, log)
            again = await post_vote(http, url, resent.model_dump_json())  # its voter never got a receipt
            assert again.status == 200, again.body
            assert VoteReceipt.model_validate(again.body).vote_hash == ballot.vote_hash(
                resent, (await _context(handle)))
            assert await gov.has_voted(resent.voter)
            ok = await post_vote(http, url, big.model_dump_json())
            assert ok.status == 200, ok.body
    finally:
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
            web.wait(timeout=15)
    assert await gov.vote_casts() == Counter({resent.voter: 1, big.voter: 1})  # the silent voter's: not yet
    await close_and_check(harness, inp, handle, gov, key, {lost.voter, resent.voter, big.voter})


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (read from /proc: a SIGKILLed web process's verifier pool would
    otherwise outlive it, see workers/web/verify.py)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


async def _context(handle: VoteHandle) -> ballot.BallotContext:
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    return ctx


# --- snapshot ---------------------------------------------------------------------------------------------------

async def test_snapshot_ballots_through_the_intake_are_published_once_with_what_the_voter_signed(
    harness: Harness, hub: RecordingHub
) -> None:
    """Against the RecordingHub, which is NOT a Snapshot hub: what is published, how often, and what the hub's
    answers do to the voter's answer. Whether a real hub accepts these votes is not tested (none can run here)."""
    hub.answer("/", 200, {"id": "0xprop", "ipfs": "bafy-proposal"})
    pid = f"snap-{uuid.uuid4().hex[:8]}"
    inp = DaoVoteInput(proposal=Proposal(id=pid, title="Open the relay", choices=["for", "against"]),
                       backend=VoteBackend.SNAPSHOT, early_close=False)
    handle = await harness.skipper.client.start_workflow(DaoVoteWorkflow.run, inp, id=vote_id(pid),
                                                         task_queue=harness.task_queue)
    await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda st: st.state is VoteState.OPEN)
    ctx = await _context(handle)
    assert ctx.snapshot_proposal == "0xprop"

    def signed(voter: LocalAccount, choice: str) -> VoteRequest:
        v = VoteRequest(proposal_id=pid, voter=voter.address, choice=choice, signature="0x", timestamp=1_800_000_000)
        return v.model_copy(update={"signature": ballot.sign(v, ctx, voter.key.hex())})

    alice, bob, carol, dave = (signed(harness.voters[i], c) for i, c in ((10, "for"), (11, "against"), (12, "for"),
                                                                        (13, "against")))
    async with serve_intake(harness) as url, aiohttp.ClientSession() as http:
        hub.answer("/", 200, {"id": "0xvote-alice"})
        first = await post_vote(http, url, alice.model_dump_json())
        assert first.status == 200, first.body
        hub.answer("/", 503, "<html>maintenance</html>")  # the hub is down: nothing recorded, send it again
        down = await post_vote(http, url, bob.model_dump_json())
        assert (down.status, down.body["type"]) == (503, VOTE_UNAVAILABLE), down.body
        hub.answer("/", 400, {"error": "client_error", "error_description": "no voting power"})
        refused = await post_vote(http, url, bob.model_dump_json())
        assert (refused.status, refused.body["type"]) == (400, SNAPSHOT_REJECTED), refused.body
        assert "no voting power" in refused.body["message"]
        # Alice again, five times at once; Carol's new ballot five times at once: one publication each.
        hub.answer("/", 200, {"id": "0xvote-carol"})
        again = await asyncio.gather(*(post_vote(http, url, v.model_dump_json()) for v in [alice] * 5 + [carol] * 5))
        assert {(a.status, a.body["vote_hash"]) for a in again[:5]} == {(200, first.body["vote_hash"])}
        assert len({(a.status, a.body["vote_hash"]) for a in again[5:]}) == 1 and again[5].status == 200, again
        # The hub has this exact message already (an earlier attempt published it, then its process died before
        # the store committed): the hub's "duplicate message" answer means published, and the vote is kept.
        hub.answer("/", 400, {"error": "client_error", "error_description": "duplicate message"})
        dup = await post_vote(http, url, dave.model_dump_json())
        assert dup.status == 200, dup.body
    votes = [body for path, body in hub.requests[1:] if path == "/"]
    assert [v["address"] for v in votes] == [alice.voter, bob.voter, bob.voter, carol.voter, dave.voter]
    assert await harness.resources.votes.count(pid) == 3  # the refused ballot is not kept here either
    for published, vote in zip(votes, [alice, bob, bob, carol, dave], strict=True):
        assert published == envelope(vote.voter, vote.signature, ballot.typed_data(vote, ctx))
        data = published["data"]  # what a hub checks first: the signature recovers to the voter
        full = {**data, "primaryType": "Vote", "types": {**data["types"], "EIP712Domain": [
            {"name": "name", "type": "string"}, {"name": "version", "type": "string"}]}}
        signer = Account.recover_message(encode_typed_data(full_message=full), signature=published["sig"])
        assert signer.lower() == vote.voter
    hub.answer("/graphql", 200, SCORES)
    await harness.skipper.fast_forward(handle, timedelta(hours=73))
    result = await handle.result()
    assert (result.snapshot_proposal, result.votes) == ("0xprop", 3)
    assert result.tally == await recount_matches(harness, pid, inp.proposal.choices)
