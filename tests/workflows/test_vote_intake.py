"""The vote intake (POST /v1/votes) against the real stack pieces: Temporal, anvil, the SQLite store, the worker.

A voter gets a receipt or a typed refusal; a ballot resent 50 times at once counts once; the workflow's tally is
the store's and equals a recount of the stored ballots; the vote closes early when no remaining power can change
the outcome; and killing the intake or the worker mid-load loses no receipted vote and counts none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.service import RPCError

from activities.chain import load_deployment
from tests.workflows.conftest import TOKEN, Harness, eventually
from tests.workflows.intake_support import Clock, Posted, post_vote, serve_intake, settings_env, spawn, wait_healthy
from tests.workflows.test_dao_vote import VoteHandle, proposal, sign, start
from westworld import ballot, merkle
from westworld.errors import (
    INVALID_INPUT,
    VOTE_AFTER_DEADLINE,
    VOTE_ALREADY_CAST,
    VOTE_BAD_CHOICE,
    VOTE_BAD_SIGNATURE,
    VOTE_CLOSED,
    VOTE_NO_POWER,
    VOTE_UNAVAILABLE,
    VOTE_UNKNOWN_PROPOSAL,
    VoteRejected,
)
from westworld.keys import vote_id
from westworld.vote import DaoVoteInput, VoteReceipt, VoteRequest, VoteState
from workers.settings import ANVIL_DEV_KEY
from workers.stack import processes
from workers.stack.contracts import distribute_voting_power
from workers.web.verify import Verifier
from workflows.dao_vote import DaoVoteWorkflow


async def recount_matches(h: Harness, pid: str, choices: list[str]) -> dict[str, int]:
    """The store's tally, asserted equal to a recount from its stored ballots."""
    count = await h.resources.votes.tally(pid)
    assert count is not None
    assert count.tally == await h.resources.votes.recount(pid, choices)
    assert count.votes == await h.resources.votes.count(pid)
    return count.tally


async def test_receipts_and_typed_refusals(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), early_close=False))
    alice, bob = harness.voters[2], harness.voters[3]
    clock = Clock()
    async with serve_intake(harness, clock) as url, aiohttp.ClientSession() as http:
        ok = await post_vote(http, url, (await sign(handle, alice, "for")).model_dump_json())
        assert ok.status == 200, ok.body
        receipt = VoteReceipt.model_validate(ok.body)
        assert (receipt.voter, receipt.choice, receipt.weight) == (alice.address.lower(), "for", 30 * TOKEN)

        async def refused(vote: VoteRequest | str) -> tuple[int, str]:
            got = await post_vote(http, url, vote if isinstance(vote, str) else vote.model_dump_json())
            assert set(got.body) == {"type", "message"} and got.body["message"], got.body
            return got.status, got.body["type"]

        assert await refused(await sign(handle, bob, "for", key=alice.key.hex())) == (400, VOTE_BAD_SIGNATURE)
        assert await refused(await sign(handle, Account.create("nobody"), "for")) == (403, VOTE_NO_POWER)
        bad_choice = (await sign(handle, bob, "for")).model_copy(update={"choice": "maybe"})
        assert await refused(bad_choice) == (400, VOTE_BAD_CHOICE)
        assert await refused(await sign(handle, bob, "for", proposal_id="no-such-vote")) == (404,
                                                                                            VOTE_UNKNOWN_PROPOSAL)
        assert await refused('{"voter": "me"}') == (400, INVALID_INPUT)
        assert await refused(await sign(handle, alice, "against")) == (409, VOTE_ALREADY_CAST)
        clock.shift = timedelta(hours=72)
        assert await refused(await sign(handle, bob, "for")) == (409, VOTE_AFTER_DEADLINE)
        clock.shift = timedelta()
        # The workflow reads the count from the store on the intake's hint.
        status = await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.votes == 1)
        assert status.tally["for"] == 30 * TOKEN
        await harness.skipper.fast_forward(handle, timedelta(hours=72, minutes=1))
        result = await handle.result()
        assert result.votes == 1 and result.tally == await recount_matches(harness, result.proposal_id,
                                                                           ["for", "against", "abstain"])
        assert await refused(await sign_for(result.proposal_id, bob, handle)) == (409, VOTE_CLOSED)


async def sign_for(pid: str, voter: LocalAccount, handle: VoteHandle, reason: str = "") -> VoteRequest:
    """A ballot signed against the (now closed) vote's context, saved before it closed."""
    ctx = (await handle.query(DaoVoteWorkflow.ballot_context))
    assert ctx is not None and ctx.proposal_id == pid
    v = VoteRequest(proposal_id=pid, voter=voter.address, choice="for", reason=reason, signature="0x")
    return v.model_copy(update={"signature": ballot.sign(v, ctx, voter.key.hex())})


async def test_a_ballot_resent_50_times_at_once_counts_once(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), early_close=False))
    voter = harness.voters[5]
    body = (await sign(handle, voter, "against")).model_dump_json()
    async with serve_intake(harness) as url, aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(post_vote(http, url, body) for _ in range(50)))
    assert {a.status for a in answers} == {200}
    assert len({(a.body["vote_hash"], a.body["weight"]) for a in answers}) == 1
    pid = (await handle.query(DaoVoteWorkflow.status)).proposal_id
    tally = await recount_matches(harness, pid, ["for", "against", "abstain"])
    assert tally["against"] == 60 * TOKEN and await harness.resources.votes.count(pid) == 1
    await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.tally == tally and s.votes == 1)
    await handle.terminate("test done")


async def test_the_workflow_tallies_the_store_and_closes_early(harness: Harness) -> None:
    inp = DaoVoteInput(proposal=proposal(), early_close=True)
    handle = await start(harness, inp)
    choices = inp.proposal.choices
    votes = [await sign(handle, v, "against" if i % 3 == 1 else "for") for i, v in enumerate(harness.voters)]
    async with serve_intake(harness) as url, aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(post_vote(http, url, v.model_dump_json()) for v in votes[:-1]))
        assert [a.status for a in answers] == [200] * (len(votes) - 1), [a.body for a in answers if a.status != 200]
        # 30 small voters: quorum not met, nothing settled; the workflow has read them from the store.
        status = await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.votes == len(votes) - 1)
        assert status.state is VoteState.OPEN and status.decided is None
        whale = await post_vote(http, url, votes[-1].model_dump_json())  # half the supply: it settles the vote
        assert whale.status == 200, whale.body
        answers.append(whale)
        result = await handle.result()  # no remaining power can reject it: closed early
        assert result.closed_early and result.decision == "approved"
        assert result.tally == await recount_matches(harness, inp.proposal.id, choices)
        assert result.votes == len(votes)
        hashes = await harness.resources.votes.vote_hashes(inp.proposal.id)
        assert sorted(hashes) == sorted(a.body["vote_hash"] for a in answers)
        assert result.votes_root == merkle.root([bytes.fromhex(h.removeprefix("0x")) for h in hashes]).hex()
        late = await post_vote(http, url, (await sign_for(inp.proposal.id, harness.voters[0], handle, "again"))
                               .model_dump_json())
        assert (late.status, late.body["type"]) == (409, VOTE_CLOSED)


LOAD_VOTERS = 240


@pytest.fixture
async def load_voters(harness: Harness) -> list[LocalAccount]:
    """Voters enough to kill processes under load, each with 1 token (funded before the vote opens)."""
    voters = [Account.create(f"load-{uuid.uuid4()}") for _ in range(LOAD_VOTERS)]
    await distribute_voting_power(harness.settings.chain_rpc_url, load_deployment(harness.settings.contracts_file),
                                  {a.key.hex(): TOKEN for a in voters}, ANVIL_DEV_KEY, fresh=True)
    return voters


async def test_killing_the_intake_and_the_worker_mid_load_loses_and_doubles_nothing(
    harness: Harness, load_voters: list[LocalAccount]
) -> None:
    s = harness.settings
    tq, web_port = f"crash-{uuid.uuid4()}", processes.free_port()
    url = f"http://127.0.0.1:{web_port}"
    log = s.data_dir / "crash.log"
    worker_env = settings_env(s, task_queue=tq, worker_metrics_port=processes.free_port())
    web_env = settings_env(s, web_port=web_port, worker_metrics_port=processes.free_port())
    worker = spawn("worker", worker_env, log)
    web = spawn("web", web_env, log)
    procs = [worker, web]
    try:
        inp = DaoVoteInput(proposal=proposal(), early_close=False)
        handle = await harness.skipper.client.start_workflow(DaoVoteWorkflow.run, inp, id=vote_id(inp.proposal.id),
                                                             task_queue=tq)
        await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda st: st.state is VoteState.OPEN,
                         timeout=60)
        ballots = [await sign(handle, v, "for" if i % 2 else "abstain") for i, v in enumerate(load_voters)]
        receipts: dict[str, Posted] = {}
        cut = [0]  # requests that died with the intake or found it down: the kill did land mid-load
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, url, web, log)

            async def cast_until_receipted(vote: VoteRequest) -> None:
                while True:  # a voter whose request died with the process sends the same ballot again
                    try:
                        got = await post_vote(http, url, vote.model_dump_json())
                    except (TimeoutError, aiohttp.ClientError):
                        cut[0] += 1
                        await asyncio.sleep(0.1)
                        continue
                    if got.status == 503:
                        await asyncio.sleep(0.1)
                        continue
                    assert got.status == 200, got.body
                    receipts[vote.voter] = got
                    return

            sem = asyncio.Semaphore(25)

            async def one(vote: VoteRequest) -> None:
                async with sem:
                    await cast_until_receipted(vote)

            load = asyncio.gather(*(one(b) for b in ballots))
            await eventually(lambda: _n(receipts), lambda n: n >= LOAD_VOTERS // 4, timeout=120)
            checkers = children_of(web.pid)  # the signature-check processes it spawned
            assert checkers, "the intake runs its signature checks in a process pool"
            web.send_signal(signal.SIGKILL)  # mid-load: requests in flight die with it
            web.wait()
            # a killed web process runs no shutdown: its checkers notice they are orphaned and end
            await eventually(lambda: asyncio.to_thread(lambda: [c for c in checkers if Path(f"/proc/{c}").exists()
                                                                and not zombie(c)]),
                             lambda alive: not alive, timeout=20)
            web = spawn("web", web_env, log)
            procs.append(web)
            await eventually(lambda: _n(receipts), lambda n: n >= LOAD_VOTERS // 2, timeout=120)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = spawn("worker", worker_env, log)
            procs.append(worker)
            await asyncio.wait_for(load, timeout=240)
            assert cut[0] > 0 and len(receipts) == LOAD_VOTERS
            # Every ballot once more: each answers with its first receipt, nothing is added.
            again = [await post_vote(http, url, b.model_dump_json()) for b in ballots[:20]]
            assert [(a.status, a.body["vote_hash"]) for a in again] == [
                (200, receipts[b.voter].body["vote_hash"]) for b in ballots[:20]]

        store = harness.resources.votes
        tally = await recount_matches(harness, inp.proposal.id, inp.proposal.choices)
        assert await store.count(inp.proposal.id) == LOAD_VOTERS
        assert sorted(await store.vote_hashes(inp.proposal.id)) == sorted(r.body["vote_hash"]
                                                                          for r in receipts.values())
        assert tally == {"for": LOAD_VOTERS // 2 * TOKEN, "against": 0, "abstain": LOAD_VOTERS // 2 * TOKEN}
        # The restarted worker answers queries once it polls (a query before that times out: not yet).
        await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda st: st.tally == tally, timeout=120,
                         not_yet=(RPCError,))
        await harness.skipper.fast_forward(handle, timedelta(hours=72, minutes=1))
        result = await handle.result()
        assert (result.votes, result.tally) == (LOAD_VOTERS, tally)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except Exception:
                os.kill(p.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def _n(receipts: dict[str, Posted]) -> int:
    return len(receipts)


async def westworld(h: Harness, web_url: str, *args: str, ok: bool = True) -> str:
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(h.settings.data_dir), "WESTWORLD_TEMPORAL_ADDRESS":
           h.settings.temporal_address, "WESTWORLD_TASK_QUEUE": h.task_queue,
           "WESTWORLD_CHAIN_RPC_URL": h.settings.chain_rpc_url, "WESTWORLD_WEB_URL": web_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert (proc.returncode == 0) == ok, f"westworld {' '.join(args)} -> {proc.returncode}:\n{text}"
    return text


async def test_vote_cast_posts_to_the_intake_and_says_so_when_it_is_down(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), early_close=False))
    pid = (await handle.query(DaoVoteWorkflow.status)).proposal_id
    keys = []
    for i in (7, 8):
        path = harness.settings.data_dir / f"voter-{i}.key"
        path.write_text(harness.voters[i].key.hex())
        keys.append(str(path))
    async with serve_intake(harness) as url:
        out = await westworld(harness, url, "vote", "cast", pid, "--choice", "for", "--key", keys[0])
        assert "accepted" in out and "note:" not in out
        again = await westworld(harness, url, "vote", "cast", pid, "--choice", "against", "--key", keys[0], ok=False)
        assert f"({VOTE_ALREADY_CAST})" in again
    down = f"http://127.0.0.1:{processes.free_port()}"
    out = await westworld(harness, down, "vote", "cast", pid, "--choice", "against", "--key", keys[1])
    assert "does not answer" in out and "cast_vote update instead" in out and "accepted" in out
    assert await harness.resources.votes.count(pid) == 2
    await handle.terminate("test done")


async def test_a_dead_signature_process_costs_a_retry_not_the_intake(harness: Harness) -> None:
    """SIGKILL a signature-check process: the votes in its chunk are answered VoteNotRecorded (nothing recorded)
    and the next ones are checked by a renewed pool."""
    handle = await start(harness, DaoVoteInput(proposal=proposal(), early_close=False))
    vote = await sign(handle, harness.voters[9], "for")
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    verifier = Verifier(2)
    try:
        await verifier.start()
        assert await verifier.verify(vote, ctx.model_dump_json()) == ballot.vote_hash(vote, ctx)
        for pid in list(verifier._pool._processes):
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        answers: list[str] = []
        for _ in range(3):
            try:
                answers.append(await verifier.verify(vote, ctx.model_dump_json()))
            except VoteRejected as err:
                raise AssertionError(f"a dead process is not the vote's fault: {err}") from err
            except Exception:  # the chunk that was with the dead process
                answers.append(VOTE_UNAVAILABLE)
        assert answers[-1] == ballot.vote_hash(vote, ctx)
    finally:
        verifier.close()
    await handle.terminate("test done")
