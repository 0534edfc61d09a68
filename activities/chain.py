"""The chain: voting power, the Governor (propose, relay signed ballots, queue, execute) and MeshConfig.

``ChainClient`` signs transactions locally with the relayer (deployer) key and waits for their receipts. Every
write is idempotent by on-chain state: a proposal by its id, a ballot by ``hasVoted``, queue and execute by the
proposal's state. On a local dev chain (id 31337) with ``dev_time_travel`` the client advances chain time to a
point the workflow has already reached on its own durable timer; on a real chain it never does.

``ChainActivities`` exposes the client to Temporal: reverts are permanent (``ChainRejected``, non-retryable),
a node that does not answer raises and is retried.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from temporalio import activity
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.chain_tx import Signer, is_dev_chain, latest_timestamp, load_deployment, save_deployment, travel_to
from westworld.chain import (
    EMERGENCY_GOVERNOR,
    GOVERNOR,
    MESH_CONFIG,
    PROPOSAL_STATES,
    TOKEN,
    ChainSnapshot,
    Deployment,
    ExecuteResult,
    GovernorProposal,
    GovernorProposeInput,
    GovernorStateResult,
    OnChainCall,
    QueueResult,
    RelayVoteInput,
)
from westworld.errors import ChainNotReady, ChainRejected

__all__ = ["ChainActivities", "ChainClient", "load_deployment", "save_deployment"]

Web3Client = AsyncWeb3[Any]  # what callers outside activities/ name the chain connection by; they never import web3


def connect_web3(rpc_url: str) -> Web3Client:
    """An async web3 connection to ``rpc_url`` (the caller disconnects it: ``await w3.provider.disconnect()``)."""
    return AsyncWeb3(AsyncHTTPProvider(rpc_url))


LOG_LOOKBACK_BLOCKS = 50_000  # how far back to look for a proposal's own events when its block is unknown
SNAPSHOT_WAIT_S = 90.0  # real chains: how long propose waits for the snapshot timepoint to pass
_NONCES_ABI = [{"inputs": [{"name": "owner", "type": "address"}], "name": "nonces",
                "outputs": [{"name": "", "type": "uint256"}], "stateMutability": "view", "type": "function"}]


def encode_call(w3: AsyncWeb3[Any], dep: Deployment, call: OnChainCall) -> tuple[str, bytes]:
    """(checksummed target, calldata) of ``call``; the target is a deployment name or an address."""
    target = dep.addresses.get(call.target, call.target)
    if not (target.startswith("0x") and len(target) == 42):
        raise ChainRejected(f"call target {call.target!r} is neither a deployed contract nor an address "
                            f"(known: {sorted(dep.addresses)})")
    name, _, rest = call.signature.replace(" ", "").partition("(")
    types = [t for t in rest.removesuffix(")").split(",") if t]
    if len(types) != len(call.args):
        raise ChainRejected(f"call {call.signature}: {len(types)} parameter(s) but {len(call.args)} argument(s)")
    try:
        encoded = w3.codec.encode(types, call.args)
    except Exception as err:  # eth_abi raises several types for values that do not fit the signature
        raise ChainRejected(f"call {call.signature} with {call.args!r}: {err}") from err
    return to_checksum_address(target), keccak(text=f"{name}({','.join(types)})")[:4] + encoded


class ChainClient:
    """Reads and writes the project's contracts as described by a ``Deployment``."""

    def __init__(
        self, w3: AsyncWeb3[Any], deployment: Deployment, relayer: LocalAccount, dev_time_travel: bool
    ) -> None:
        self.w3 = w3
        self.dep = deployment
        self.relayer = relayer
        self.dev_time_travel = dev_time_travel
        self.tx = Signer(w3, relayer, deployment.chain_id, deployment.abis.values())
        self._names: dict[str, str] = {}
        self._contracts: dict[tuple[str, str], Any] = {}

    @property
    def can_travel(self) -> bool:
        """True on a dev chain with time travel on: the only place chain time is ever moved."""
        return self.dev_time_travel and is_dev_chain(self.dep.chain_id)

    def contract(self, name: str, address: str | None = None) -> Any:
        """A contract object, built once per (name, address): building one parses the whole ABI."""
        key = (name, address or "")
        if key not in self._contracts:
            self._contracts[key] = self.w3.eth.contract(
                address=to_checksum_address(address or self.dep.address(name)), abi=self.dep.abis[name])
        return self._contracts[key]

    def governor(self, address: str) -> Any:
        return self.contract(GOVERNOR, address)

    async def latest_timestamp(self) -> int:
        return await latest_timestamp(self.w3)

    async def travel_to(self, timestamp: int) -> bool:
        """Dev chain with time travel only: mine a block at or after ``timestamp``. False (no-op) elsewhere."""
        if not self.can_travel:
            return False
        await travel_to(self.w3, timestamp)
        return True

    async def snapshot(self) -> ChainSnapshot:
        """A past timepoint (latest block time - 1) and the total supply then: weights of an off-chain vote.

        Several dev-chain blocks can share a timestamp, so there a block one second later is mined first and
        everything already mined is inside the snapshot; on a real chain time moves on by itself.
        """
        latest = await self.latest_timestamp()
        if await self.travel_to(latest + 1):
            latest += 1
        timepoint = latest - 1
        token = self.contract(TOKEN)
        supply = await self.tx.call(token.functions.getPastTotalSupply(timepoint), "getPastTotalSupply")
        block = int(await self.w3.eth.block_number)
        return ChainSnapshot(chain_id=self.dep.chain_id, timepoint=timepoint, total_supply=int(supply),
                             token=token.address, block=block)

    async def voting_power(self, voter: str, timepoint: int) -> int:
        token = self.contract(TOKEN)
        return int(await self.tx.call(token.functions.getPastVotes(to_checksum_address(voter), timepoint),
                                      f"getPastVotes({voter}, {timepoint})"))

    async def ballot_nonce(self, governor: str, voter: str) -> int:
        return int(await self.governor(governor).functions.nonces(to_checksum_address(voter)).call())

    @staticmethod
    async def read_ballot_nonce(rpc_url: str, governor: str, voter: str) -> int:
        """A voter's current Ballot nonce on ``governor``, without a deployment file (for the CLI)."""
        w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
        try:
            c = w3.eth.contract(address=to_checksum_address(governor), abi=_NONCES_ABI)
            return int(await c.functions.nonces(to_checksum_address(voter)).call())
        finally:
            await w3.provider.disconnect()

    async def read_parameter(self, key: str) -> str:
        return str(await self.contract(MESH_CONFIG).functions.parameters(key).call())

    async def governor_name(self, gov: Any) -> str:
        if gov.address not in self._names:
            self._names[gov.address] = str(await gov.functions.name().call())
        return self._names[gov.address]

    async def propose(self, inp: GovernorProposeInput) -> GovernorProposal:
        """Propose on the normal or emergency Governor; returns the existing proposal if it was already made."""
        gov = self.contract(EMERGENCY_GOVERNOR if inp.emergency else GOVERNOR)
        if not inp.calls:
            raise ChainRejected(f"proposal {inp.proposal_key}: a Governor proposal needs at least one call")
        encoded = [encode_call(self.w3, self.dep, c) for c in inp.calls]
        targets, datas = [t for t, _ in encoded], [d for _, d in encoded]
        values = [c.value for c in inp.calls]
        dhash = keccak(text=inp.description)
        pid = int(await gov.functions.hashProposal(targets, values, datas, dhash).call())
        if int(await gov.functions.proposalSnapshot(pid).call()) == 0:
            _, block, _ = await self.tx.send(gov.functions.propose(targets, values, datas, inp.description),
                                             f"propose {inp.proposal_key}")
        else:
            block = await self._event_block(gov, "ProposalCreated", pid, None)
        snapshot = int(await gov.functions.proposalSnapshot(pid).call())
        await self._wait_past(snapshot)
        token = self.contract(TOKEN)
        return GovernorProposal(
            governor=gov.address, governor_name=await self.governor_name(gov), chain_id=self.dep.chain_id,
            onchain_id=str(pid), snapshot=snapshot, deadline=int(await gov.functions.proposalDeadline(pid).call()),
            total_supply=int(await token.functions.getPastTotalSupply(snapshot).call()),
            quorum=int(await gov.functions.quorum(snapshot).call()), description_hash="0x" + dhash.hex(),
            targets=targets, values=values, calldatas=["0x" + d.hex() for d in datas], proposed_block=block,
        )

    async def _wait_past(self, timepoint: int) -> None:
        """Until the chain clock is past ``timepoint`` (voting opens, the snapshot can be read)."""
        if await self.latest_timestamp() > timepoint:
            return
        if self.can_travel:
            await travel_to(self.w3, timepoint + 1)
            return
        deadline = asyncio.get_running_loop().time() + SNAPSHOT_WAIT_S
        while await self.latest_timestamp() <= timepoint:
            if asyncio.get_running_loop().time() > deadline:
                raise ChainNotReady(f"chain time has not passed the snapshot {timepoint} yet")
            await asyncio.sleep(1.0)

    async def relay_vote(self, inp: RelayVoteInput) -> str | None:
        """``castVoteBySig`` with the voter's own Ballot signature; None (nothing sent) if they already voted."""
        gov = self.governor(inp.governor)
        pid, voter = int(inp.onchain_id), to_checksum_address(inp.voter)
        if await gov.functions.hasVoted(pid, voter).call():
            return None
        sig = bytes.fromhex(inp.signature.removeprefix("0x"))
        tx, _, _ = await self.tx.send(gov.functions.castVoteBySig(pid, inp.support, voter, sig),
                                      f"castVoteBySig by {inp.voter} on {inp.onchain_id}")
        return tx

    async def state(self, g: GovernorProposal) -> GovernorStateResult:
        gov = self.governor(g.governor)
        pid = int(g.onchain_id)
        index = await self.tx.call(gov.functions.state(pid), f"state of proposal {g.onchain_id}")
        against, for_, abstain = await gov.functions.proposalVotes(pid).call()
        return GovernorStateResult(state=PROPOSAL_STATES[int(index)], for_votes=int(for_),
                                   against_votes=int(against), abstain_votes=int(abstain))

    async def finalize(self, g: GovernorProposal) -> GovernorStateResult:
        """The state after the deadline; on a dev chain with time travel, moves chain time past it first."""
        st = await self.state(g)
        if st.state in ("Pending", "Active") and self.can_travel:
            await travel_to(self.w3, g.deadline + 1)
            st = await self.state(g)
        return st

    def _call_args(self, g: GovernorProposal) -> tuple[list[str], list[int], list[bytes], bytes]:
        datas = [bytes.fromhex(d.removeprefix("0x")) for d in g.calldatas]
        return g.targets, g.values, datas, bytes.fromhex(g.description_hash.removeprefix("0x"))

    async def queue(self, g: GovernorProposal) -> QueueResult:
        """Queue a Succeeded proposal in the timelock; a Queued one returns its eta (idempotent)."""
        gov = self.governor(g.governor)
        pid = int(g.onchain_id)
        st = (await self.state(g)).state
        if st == "Succeeded":
            tx, _, _ = await self.tx.send(gov.functions.queue(*self._call_args(g)), f"queue {g.onchain_id}")
        elif st in ("Queued", "Executed"):
            tx = await self._event_tx(gov, "ProposalQueued", pid, g.proposed_block)
        else:
            raise ChainRejected(f"proposal {g.onchain_id} cannot be queued: it is {st} (only Succeeded can)")
        return QueueResult(eta=int(await gov.functions.proposalEta(pid).call()), tx_hash=tx)

    async def execute(self, g: GovernorProposal) -> ExecuteResult:
        """Execute a Queued proposal once its eta is reached (travelling there on a dev chain); idempotent."""
        gov = self.governor(g.governor)
        pid = int(g.onchain_id)
        st = (await self.state(g)).state
        if st == "Executed":
            found = await self._find_event(gov, "ProposalExecuted", pid, g.proposed_block)
            return ExecuteResult(tx_hash=found[0] if found else "", block=found[1] if found else 0)
        if st != "Queued":
            raise ChainRejected(f"proposal {g.onchain_id} cannot be executed: it is {st} (only Queued can)")
        eta = int(await gov.functions.proposalEta(pid).call())
        if await self.latest_timestamp() < eta and not await self.travel_to(eta):
            raise ChainNotReady(f"proposal {g.onchain_id} is queued until {eta}; the chain is not there yet")
        tx, block, _ = await self.tx.send(gov.functions.execute(*self._call_args(g)), f"execute {g.onchain_id}")
        return ExecuteResult(tx_hash=tx, block=block)

    async def _find_event(self, gov: Any, event: str, pid: int, from_block: int | None) -> tuple[str, int] | None:
        """(tx hash, block) of the Governor's ``event`` for proposal ``pid``, searching from ``from_block``."""
        if from_block is None or from_block <= 0:
            from_block = max(0, int(await self.w3.eth.block_number) - LOG_LOOKBACK_BLOCKS)
        for log in await getattr(gov.events, event)().get_logs(from_block=from_block):
            if int(log["args"]["proposalId"]) == pid:
                return "0x" + bytes(log["transactionHash"]).hex(), int(log["blockNumber"])
        return None

    async def _event_tx(self, gov: Any, event: str, pid: int, from_block: int | None) -> str:
        found = await self._find_event(gov, event, pid, from_block)
        return found[0] if found else ""

    async def _event_block(self, gov: Any, event: str, pid: int, from_block: int | None) -> int:
        found = await self._find_event(gov, event, pid, from_block)
        return found[1] if found else 0


class ChainActivities:
    """Activities over a ``ChainClient``: reverts are permanent (``ChainRejected``), connection failures retry."""

    def __init__(self, client: ChainClient) -> None:
        self._c = client

    @activity.defn(name="chain_snapshot")
    async def chain_snapshot(self) -> ChainSnapshot:
        """Voting-power snapshot for an off-chain vote."""
        return await self._c.snapshot()

    @activity.defn(name="governor_propose")
    async def governor_propose(self, inp: GovernorProposeInput) -> GovernorProposal:
        """Propose on the Governor (idempotent by proposal id)."""
        return await self._c.propose(inp)

    @activity.defn(name="relay_vote")
    async def relay_vote(self, inp: RelayVoteInput) -> str | None:
        """Relay a signed ballot; None if the voter had already voted."""
        return await self._c.relay_vote(inp)

    @activity.defn(name="governor_state")
    async def governor_state(self, g: GovernorProposal) -> GovernorStateResult:
        """The proposal's state and on-chain tally."""
        return await self._c.state(g)

    @activity.defn(name="governor_finalize")
    async def governor_finalize(self, g: GovernorProposal) -> GovernorStateResult:
        """The state once the deadline has passed (dev chain: time travels there)."""
        return await self._c.finalize(g)

    @activity.defn(name="governor_queue")
    async def governor_queue(self, g: GovernorProposal) -> QueueResult:
        """Queue a Succeeded proposal in the timelock."""
        return await self._c.queue(g)

    @activity.defn(name="governor_execute")
    async def governor_execute(self, g: GovernorProposal) -> ExecuteResult:
        """Execute a queued proposal; ``ChainNotReady`` before its eta (retried)."""
        return await self._c.execute(g)
