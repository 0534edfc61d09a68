"""The chain client and activities against a real anvil with the project's contracts; each test is reverted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from temporalio.exceptions import ApplicationError

from activities.chain import ChainActivities, ChainClient
from tests.fixtures.activity_env import InterceptedEnvironment
from westworld.chain import (
    EMERGENCY_GOVERNOR,
    GOVERNOR,
    MESH_CONFIG,
    TIMELOCK,
    TOKEN,
    Deployment,
    GovernorProposal,
    GovernorProposeInput,
    OnChainCall,
    RelayVoteInput,
)
from westworld.errors import CHAIN_REJECTED, ChainRejected
from workers.stack.contracts import distribute_voting_power

T = 10**18  # one token, in wei
AGAINST, FOR = 0, 1


@pytest.fixture
async def voters(chain_isolated: ChainClient) -> list[LocalAccount]:
    """Two voters: 60,000 and 30,000 tokens (of 1,000,000) delegated to themselves, one second in the past."""
    accounts = [Account.create(f"chain-test-{i}") for i in range(2)]
    await distribute_voting_power(chain_isolated.w3, chain_isolated.dep,
                                  {accounts[0].key.hex(): 60_000 * T, accounts[1].key.hex(): 30_000 * T})
    await chain_isolated.travel_to(await chain_isolated.latest_timestamp() + 2)
    return accounts


def set_param(key: str, value: str) -> GovernorProposeInput:
    return GovernorProposeInput(
        proposal_key=key, description=f"# Set {key} to {value}\n\n[{key}-{uuid.uuid4().hex[:8]}]",
        calls=[OnChainCall(target=MESH_CONFIG, signature="setParameter(string,string)", args=[key, value])],
        emergency=True,
    )


def sign_ballot(acct: LocalAccount, g: GovernorProposal, support: int, nonce: int, voter: str | None = None) -> str:
    msg: dict[str, Any] = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "Ballot": [{"name": "proposalId", "type": "uint256"}, {"name": "support", "type": "uint8"},
                       {"name": "voter", "type": "address"}, {"name": "nonce", "type": "uint256"}],
        },
        "primaryType": "Ballot",
        "domain": {"name": g.governor_name, "version": "1", "chainId": g.chain_id, "verifyingContract": g.governor},
        "message": {"proposalId": int(g.onchain_id), "support": support, "voter": voter or acct.address,
                    "nonce": nonce},
    }
    return "0x" + bytes(acct.sign_message(encode_typed_data(full_message=msg)).signature).hex()


async def cast(chain: ChainClient, voter: LocalAccount, g: GovernorProposal, support: int) -> str | None:
    nonce = await chain.ballot_nonce(g.governor, voter.address)
    return await chain.relay_vote(RelayVoteInput(
        governor=g.governor, onchain_id=g.onchain_id, support=support, voter=voter.address,
        signature=sign_ballot(voter, g, support, nonce),
    ))


async def test_deployment_wires_both_governors_to_one_timelock(deployment: Deployment,
                                                                chain_client: ChainClient) -> None:
    timelock = chain_client.contract(TIMELOCK)
    token = chain_client.contract(TOKEN)
    admin = await timelock.functions.DEFAULT_ADMIN_ROLE().call()
    proposer = await timelock.functions.PROPOSER_ROLE().call()
    executor = await timelock.functions.EXECUTOR_ROLE().call()
    assert not await timelock.functions.hasRole(admin, deployment.deployer).call()
    for name in (GOVERNOR, EMERGENCY_GOVERNOR):
        assert await timelock.functions.hasRole(proposer, deployment.addresses[name]).call()
    assert await timelock.functions.hasRole(executor, "0x" + "00" * 20).call()  # anyone may execute
    assert await token.functions.CLOCK_MODE().call() == "mode=timestamp"
    assert await chain_client.contract(MESH_CONFIG).functions.owner().call() == deployment.addresses[TIMELOCK]
    governors = (GOVERNOR, EMERGENCY_GOVERNOR)
    periods = {n: await chain_client.contract(n).functions.votingPeriod().call() for n in governors}
    assert periods == {GOVERNOR: 72 * 3600, EMERGENCY_GOVERNOR: 2 * 3600}


async def test_delegated_voting_power_and_snapshot(chain_isolated: ChainClient, voters: list[LocalAccount]) -> None:
    chain = chain_isolated
    snap = await chain.snapshot()
    assert snap.total_supply == 1_000_000 * T and snap.chain_id == 31337
    assert await chain.voting_power(voters[0].address, snap.timepoint) == 60_000 * T
    assert await chain.voting_power(voters[1].address, snap.timepoint) == 30_000 * T
    # Distributing again tops up to the same amounts: nothing moves.
    await distribute_voting_power(chain.w3, chain.dep, {voters[0].key.hex(): 60_000 * T})
    assert await chain.contract(TOKEN).functions.balanceOf(voters[0].address).call() == 60_000 * T


async def test_propose_is_idempotent_and_opens_voting(chain_isolated: ChainClient,
                                                      voters: list[LocalAccount]) -> None:
    inp = set_param("mtu", "1400")
    first = await chain_isolated.propose(inp)
    again = await chain_isolated.propose(inp)
    assert again.onchain_id == first.onchain_id and again.snapshot == first.snapshot
    assert first.governor == chain_isolated.dep.addresses[EMERGENCY_GOVERNOR]
    assert first.governor_name == "Westworld Emergency Governor"
    assert first.deadline - first.snapshot == 2 * 3600
    assert first.quorum == 40_000 * T and first.total_supply == 1_000_000 * T
    assert (await chain_isolated.state(first)).state == "Active"


async def test_relayed_ballot_counts_once_and_forgeries_are_rejected(
    chain_isolated: ChainClient, voters: list[LocalAccount]
) -> None:
    g = await chain_isolated.propose(set_param("mtu", "1400"))
    forger = Account.create("forger")
    forged = sign_ballot(forger, g, FOR, 0, voter=voters[1].address)
    acts = ChainActivities(chain_isolated)
    with pytest.raises(ApplicationError) as info:
        await InterceptedEnvironment().run(acts.relay_vote, RelayVoteInput(
            governor=g.governor, onchain_id=g.onchain_id, support=FOR, voter=voters[1].address, signature=forged))
    assert info.value.type == CHAIN_REJECTED and info.value.non_retryable
    assert "GovernorInvalidSignature" in info.value.message and voters[1].address in info.value.message

    tx = await cast(chain_isolated, voters[0], g, FOR)
    assert tx is not None and tx.startswith("0x")
    nonce = await chain_isolated.ballot_nonce(g.governor, voters[0].address)
    assert nonce == 1
    replay = RelayVoteInput(governor=g.governor, onchain_id=g.onchain_id, support=FOR, voter=voters[0].address,
                            signature=sign_ballot(voters[0], g, FOR, 0))
    assert await chain_isolated.relay_vote(replay) is None  # already voted: nothing sent
    state = await chain_isolated.state(g)
    assert (state.state, state.for_votes, state.against_votes) == ("Active", 60_000 * T, 0)


async def test_passed_proposal_is_queued_and_executed(chain_isolated: ChainClient,
                                                       voters: list[LocalAccount]) -> None:
    chain = chain_isolated
    key = f"mtu-{uuid.uuid4().hex[:6]}"
    g = await chain.propose(set_param(key, "1400"))
    await cast(chain, voters[0], g, FOR)
    await cast(chain, voters[1], g, AGAINST)
    final = await chain.finalize(g)
    assert (final.state, final.for_votes, final.against_votes) == ("Succeeded", 60_000 * T, 30_000 * T)
    queued = await chain.queue(g)
    assert queued.eta >= await chain.latest_timestamp() + chain.dep.timelock_delay - 1
    assert await chain.queue(g) == queued  # idempotent: same eta, same transaction
    executed = await chain.execute(g)
    assert executed.block > 0 and executed.tx_hash.startswith("0x")
    assert await chain.read_parameter(key) == "1400"
    assert await chain.execute(g) == executed
    assert (await chain.state(g)).state == "Executed"


async def test_defeated_proposal_cannot_be_queued(chain_isolated: ChainClient, voters: list[LocalAccount]) -> None:
    g = await chain_isolated.propose(set_param("mtu", "9000"))
    await cast(chain_isolated, voters[0], g, AGAINST)
    assert (await chain_isolated.finalize(g)).state == "Defeated"
    with pytest.raises(ChainRejected, match="cannot be queued: it is Defeated"):
        await chain_isolated.queue(g)
    with pytest.raises(ApplicationError) as info:
        await InterceptedEnvironment().run(ChainActivities(chain_isolated).governor_queue, g)
    assert info.value.type == CHAIN_REJECTED and info.value.non_retryable
