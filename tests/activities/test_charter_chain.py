"""The Charter contract as deployed with the other contracts, on a real anvil: its state after deployment, the
audit checkpoints the relayer appends (directly and through the hourly anchor activity), and who may not."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

from activities.anchor import AnchorActivities
from activities.chain import ChainClient
from activities.charter_chain import DEFAULT_CHARTER_FILE, CharterChain
from westworld.audit_anchor import LogHead
from westworld.chain import CHARTER, TIMELOCK, Deployment
from westworld.charter import charter_hash, load_charter
from westworld.errors import ChainRejected


def root(n: int) -> str:
    return hashlib.sha256(f"root-{n}".encode()).hexdigest()


async def test_the_charter_is_deployed_with_the_file_and_owned_by_the_timelock(
        chain_isolated: ChainClient, deployment: Deployment) -> None:
    state = await CharterChain(chain_isolated).read()
    charter = load_charter(DEFAULT_CHARTER_FILE.read_bytes())
    assert (state.version, state.policy_hash) == (1, charter_hash(DEFAULT_CHARTER_FILE.read_bytes()))
    assert {r.name: (r.allowed, r.consent_required, r.retention_days) for r in state.metrics} == {
        m.name: (True, m.consent_required, m.retention_days) for m in charter.spec.metrics}
    c = chain_isolated.contract(CHARTER)
    assert await c.functions.owner().call() == deployment.address(TIMELOCK)
    assert await c.functions.anchorer().call() == chain_isolated.relayer.address
    with pytest.raises(ChainRejected, match="OwnableUnauthorizedAccount"):
        await chain_isolated.tx.send(c.functions.amend(2, bytes(32)), "amend without a vote")


async def test_checkpoints_only_grow_and_repeat_nothing(chain_isolated: ChainClient) -> None:
    charter = CharterChain(chain_isolated)
    c = chain_isolated.contract(CHARTER)
    start = int(await c.functions.checkpointCount().call())
    base = int((await c.functions.latestCheckpoint().call())[0]) if start else 0
    assert await charter.anchor_checkpoint(base + 5, root(5))
    assert await charter.anchor_checkpoint(base + 5, root(5)) == "", "the same head is not sent again"
    assert await charter.anchor_checkpoint(base + 3, root(3)) == "", "a smaller head is not sent (it would revert)"
    size, got, _ = await c.functions.latestCheckpoint().call()
    assert (int(size), bytes(got).hex()) == (base + 5, root(5))
    assert int(await c.functions.checkpointCount().call()) == start + 1


async def test_the_hourly_anchor_goes_to_the_charter(chain_isolated: ChainClient) -> None:
    c = chain_isolated.contract(CHARTER)
    count = int(await c.functions.checkpointCount().call())
    base = int((await c.functions.latestCheckpoint().call())[0]) if count else 0
    head = LogHead(ok=True, tree_size=base + 7, root=root(7))
    tx = await AnchorActivities(chain_isolated).anchor_root(head)
    assert tx.startswith("0x")
    size, got, _ = await c.functions.latestCheckpoint().call()
    assert (int(size), bytes(got).hex()) == (base + 7, root(7))


async def test_nobody_else_appends_a_checkpoint(chain_isolated: ChainClient, deployment: Deployment,
                                               anvil_url: str) -> None:
    stranger = ChainClient(AsyncWeb3(AsyncHTTPProvider(anvil_url)), deployment, Account.create(), False)
    await stranger.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [stranger.relayer.address, hex(10**18)])
    c = stranger.contract(CHARTER)
    with pytest.raises(ChainRejected, match="NotAnchorer"):
        await stranger.tx.send(c.functions.anchorCheckpoint(10**9, bytes(32)), "a stranger's checkpoint")
    await stranger.w3.provider.disconnect()
