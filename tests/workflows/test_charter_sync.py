"""CharterSyncWorkflow on a real Temporal server and anvil (the Charter deployed with the other contracts), a real
charter gate and the session's Prometheus: the on-chain charter is put in force at every point and audited; a file
whose hash is not on chain is refused (the gate stays closed) and audited; an amendment executed by the timelock is
noticed and put in force."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

from activities.chain import ChainClient
from activities.charter_chain import DEFAULT_CHARTER_FILE, CharterChain
from tests.charter_support import audited, charter_settings, gate_job, job_rules
from tests.fixtures.harness import Harness, eventually
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.test_dao_vote import start as start_vote
from tests.workflows.test_dao_vote import vote
from westworld.chain import CHARTER, TIMELOCK, Deployment
from westworld.charter import charter_hash, load_charter
from westworld.charter_sync import CharterSyncInput, CharterSyncState, metric_relabel_configs
from workers.cli.charter import amendment_vote
from workers.gate import server as charter_gate
from workflows.charter_sync import CharterSyncWorkflow
from workflows.dao_vote import DaoVoteWorkflow

POLL = 1.0


KEPT_IN_V2 = ("mesh_link_quality", "mesh_node_uptime_seconds")


@pytest.fixture
def charter_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The shipped charter; or (indirect param) ``forged``, a copy with one purpose changed (not on chain), or
    ``v2``, version 2 keeping two metrics."""
    kind = getattr(request, "param", "shipped")
    if kind == "shipped":
        return DEFAULT_CHARTER_FILE
    path = tmp_path / f"{kind}-charter.yaml"
    if kind == "forged":
        path.write_bytes(DEFAULT_CHARTER_FILE.read_bytes().replace(b"to route around bad links",
                                                                  b"and also where each user roams"))
        return path
    data = yaml.safe_load(DEFAULT_CHARTER_FILE.read_bytes())
    data["metadata"]["version"] = 2
    data["spec"]["metrics"] = [m for m in data["spec"]["metrics"] if m["name"] in KEPT_IN_V2]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_charter(path.read_bytes())  # valid
    return path


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, charter_file: Path) -> dict[str, Any]:
    return charter_settings(prometheus, charter_file=charter_file)


@pytest.fixture
async def gate(harness: Harness) -> AsyncIterator[charter_gate.RunningGate]:
    running = await charter_gate.start(harness.settings, kernel=False)
    try:
        yield running
    finally:
        await running.close()


async def start_sync(h: Harness) -> Any:
    return await h.client.start_workflow(
        CharterSyncWorkflow.run, CharterSyncInput(poll_interval=POLL), id=f"charter-sync-{uuid.uuid4().hex[:8]}",
        task_queue=h.task_queue)


async def query(handle: Any) -> CharterSyncState:
    state: CharterSyncState = await handle.query(CharterSyncWorkflow.state)
    return state


async def gate_status(h: Harness) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{h.settings.charter_gate_url}/status")).json()
        return body


async def test_the_charter_on_chain_is_put_in_force_everywhere(
        harness: Harness, gate: charter_gate.RunningGate, prometheus: PrometheusServer) -> None:
    digest = charter_hash(DEFAULT_CHARTER_FILE.read_bytes())
    with gate_job(prometheus, [f"127.0.0.1:{harness.settings.charter_gate_port}"]):
        handle = await start_sync(harness)
        try:
            state = await eventually(lambda: query(handle), lambda s: s.applied_version == 1, timeout=30)
            assert state.applied_hash == digest
            assert {x.layer: x.state for x in state.layers}["gate"] in ("applied", "unchanged")
            status = await gate_status(harness)
            assert status["charter"] == {"version": 1, "policy_hash": digest, "names": sorted(
                m.name for m in load_charter(DEFAULT_CHARTER_FILE.read_bytes()).spec.metrics)}
            assert job_rules(prometheus) == metric_relabel_configs(load_charter(DEFAULT_CHARTER_FILE.read_bytes()))
            [entry] = await audited(harness.resources, "charter.applied")
            assert entry.payload["policy_hash"] == digest
            assert {x["layer"]: x["state"] for x in entry.payload["layers"]} == {
                "gate": "applied", "kernel": "unavailable", "scrape": "applied"}
            # a further poll changes nothing and audits nothing new
            polls = state.polls
            await eventually(lambda: query(handle), lambda s: s.polls >= polls + 2, timeout=30)
            assert len(await audited(harness.resources, "charter.applied")) == 1
        finally:
            await handle.cancel()


@pytest.mark.parametrize("charter_file", ["forged"], indirect=True)
async def test_a_charter_whose_hash_is_not_on_chain_is_refused(
        harness: Harness, gate: charter_gate.RunningGate, charter_file: Path) -> None:
    handle = await start_sync(harness)
    try:
        state = await eventually(lambda: query(handle), lambda s: bool(s.refused), timeout=30)
        assert "hashes to " + charter_hash(charter_file.read_bytes()) in state.refused
        assert state.applied_version == 0
        status = await gate_status(harness)
        assert status["charter"]["version"] == 0, "the gate stays closed"
        # the gate drops what arrives while closed
        [entry] = await audited(harness.resources, "charter.refused")
        assert entry.payload["file_hash"] == charter_hash(charter_file.read_bytes())
        polls = state.polls
        await eventually(lambda: query(handle), lambda s: s.polls >= polls + 2, timeout=30)
        assert len(await audited(harness.resources, "charter.refused")) == 1, "refused once, audited once"
    finally:
        await handle.cancel()


@pytest.fixture
async def impersonated_timelock(chain_isolated: ChainClient, deployment: Deployment) -> AsyncIterator[Any]:
    """The Charter as its owner (the timelock) would call it: anvil impersonation, reverted after the test. What
    a DAO vote's executed calls do, without a 72 h vote (the governor path is DaoVoteWorkflow's own test)."""
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(chain_isolated.w3.provider.endpoint_uri))
    timelock = to_checksum_address(deployment.address(TIMELOCK))
    await w3.provider.make_request(RPCEndpoint("anvil_impersonateAccount"), [timelock])
    await w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [timelock, hex(10**18)])
    charter = w3.eth.contract(address=to_checksum_address(deployment.address(CHARTER)), abi=deployment.abis[CHARTER])

    async def amend(version: int, digest: str) -> None:
        tx = await charter.functions.amend(version, bytes.fromhex(digest)).transact({"from": timelock})
        await w3.eth.wait_for_transaction_receipt(tx)

    try:
        yield amend
    finally:
        await w3.provider.make_request(RPCEndpoint("anvil_stopImpersonatingAccount"), [timelock])
        await w3.provider.disconnect()


@pytest.mark.parametrize("charter_file", ["v2"], indirect=True)
async def test_an_amendment_on_chain_is_noticed_and_put_in_force(
        harness: Harness, gate: charter_gate.RunningGate, impersonated_timelock: Any) -> None:
    v2 = harness.settings.charter_file
    assert load_charter(v2.read_bytes()).metadata.version == 2
    handle = await start_sync(harness)
    try:
        state = await eventually(lambda: query(handle), lambda s: bool(s.refused), timeout=30)
        assert state.applied_version == 0, "version 2 is not on chain yet: refused"
        await impersonated_timelock(2, charter_hash(v2.read_bytes()))
        await handle.signal(CharterSyncWorkflow.sync_now)
        state = await eventually(lambda: query(handle), lambda s: s.applied_version == 2, timeout=30)
        assert not state.refused
        assert (await gate_status(harness))["charter"]["names"] == list(KEPT_IN_V2)
        [applied] = await audited(harness.resources, "charter.applied")
        assert applied.payload["version"] == 2
        assert json.dumps(applied.payload).count("mesh_user_session_seconds") == 0
    finally:
        await handle.cancel()


@pytest.mark.parametrize("charter_file", ["v2"], indirect=True)
async def test_a_governor_vote_amends_the_charter_and_the_sync_follows(
        harness: Harness, gate: charter_gate.RunningGate, chain_isolated: ChainClient) -> None:
    """`westworld charter propose`'s vote, run by DaoVoteWorkflow on the Governor: executed through the timelock,
    the Charter holds version 2 and its flags, and the sync puts the file in force."""
    v2 = harness.settings.charter_file
    content = v2.read_bytes()
    reader = CharterChain(chain_isolated)
    before = await reader.read()
    inp = amendment_vote(load_charter(content), charter_hash(content), before, [], f"charter-{uuid.uuid4().hex[:6]}",
                         v2.name)
    inp = inp.model_copy(update={"quorum": 0.04})
    vote_handle = await start_vote(harness, inp)
    ctx = await vote_handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None and ctx.governor is not None
    for voter in harness.voters[20:31]:
        await vote(vote_handle, voter, "for", nonce=await chain_isolated.ballot_nonce(ctx.governor, voter.address))
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=73))
    result = await vote_handle.result()
    assert result.onchain_state == "Executed", result
    after = await reader.read()
    assert (after.version, after.policy_hash) == (2, charter_hash(content))
    assert {r.name: r.allowed for r in after.metrics}["mesh_user_session_seconds"] is False
    handle = await start_sync(harness)
    try:
        state = await eventually(lambda: query(handle), lambda s: s.applied_version == 2, timeout=30)
        assert state.applied_hash == charter_hash(content) and not state.refused
        assert (await gate_status(harness))["charter"]["names"] == list(KEPT_IN_V2)
    finally:
        await handle.cancel()
