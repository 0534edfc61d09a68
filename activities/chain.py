"""The chain: voting power, the Governor (propose, relay signed ballots, queue, execute) and the timelock.

``ChainClient`` signs transactions locally with the relayer key and waits for receipts; sends are serialised
so nonces never collide. On a local dev chain (id 31337) with ``dev_time_travel`` the client advances chain
time to a deadline the workflow has already reached on its own durable timer; on a real chain it never does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from temporalio import activity
from temporalio.exceptions import ApplicationError
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint

from westworld.chain import (
    GOVERNOR_STATES,
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
from westworld.errors import CHAIN_REJECTED, ChainRejected, WestworldError

DEV_CHAIN_ID = 31337


def save_deployment(path: Path, dep: Deployment) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dep.model_dump_json(indent=1))


def load_deployment(path: Path) -> Deployment:
    try:
        return Deployment.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise WestworldError(f"no contracts deployed: {path} is missing; run `westworld up`") from None


def _encode_call(w3: AsyncWeb3, dep: Deployment, call: OnChainCall) -> tuple[str, bytes]:
    target = dep.addresses.get(call.target, call.target)
    name, _, rest = call.signature.partition("(")
    types = [t for t in rest.rstrip(")").split(",") if t]
    if len(types) != len(call.args):
        raise ChainRejected(f"call {call.signature}: {len(types)} parameter(s) but {len(call.args)} argument(s)")
    data = keccak(text=f"{name}({','.join(types)})")[:4] + w3.codec.encode(types, call.args)
    return to_checksum_address(target), data


class ChainClient:
    def __init__(self, w3: AsyncWeb3, deployment: Deployment, relayer: LocalAccount, dev_time_travel: bool) -> None:
        self.w3 = w3
        self.dep = deployment
        self.relayer = relayer
        self.dev_time_travel = dev_time_travel
        self._send_lock = asyncio.Lock()

    def contract(self, name: str, address: str | None = None) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(address or self.dep.addresses[name]),
                                    abi=self.dep.abis[name])

    def governor(self, address: str) -> Any:
        return self.contract("WestworldGovernor", address)

    async def latest_timestamp(self) -> int:
        return int((await self.w3.eth.get_block("latest"))["timestamp"])

    async def snapshot(self) -> ChainSnapshot:
        timepoint = await self.latest_timestamp() - 1
        token = self.contract("WestworldToken")
        supply = await token.functions.getPastTotalSupply(timepoint).call()
        return ChainSnapshot(chain_id=self.dep.chain_id, timepoint=timepoint, total_supply=supply,
                             token=token.address)

    async def voting_power(self, voter: str, timepoint: int) -> int:
        token = self.contract("WestworldToken")
        return int(await token.functions.getPastVotes(to_checksum_address(voter), timepoint).call())

    async def ballot_nonce(self, governor: str, voter: str) -> int:
        return int(await self.governor(governor).functions.nonces(to_checksum_address(voter)).call())

    async def read_parameter(self, key: str) -> str:
        return str(await self.contract("MeshConfig").functions.parameters(key).call())

    async def send(self, fn: Any, what: str) -> tuple[str, int]:
        """Sign and send a contract call as the relayer; (tx hash, block). A revert raises ChainRejected."""
        async with self._send_lock:
            try:
                tx = await fn.build_transaction({
                    "from": self.relayer.address,
                    "nonce": await self.w3.eth.get_transaction_count(self.relayer.address, "pending"),
                    "chainId": self.dep.chain_id,
                })
            except ContractLogicError as err:
                raise ChainRejected(f"{what} would revert: {err.message or err}") from err
            signed = self.relayer.sign_transaction(tx)
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            raise ChainRejected(f"{what} reverted in tx 0x{bytes(tx_hash).hex()}")
        return "0x" + bytes(tx_hash).hex(), int(receipt["blockNumber"])

    async def _travel_to(self, timestamp: int) -> None:
        """Dev chain only: mine a block at or after ``timestamp``."""
        if not (self.dev_time_travel and self.dep.chain_id == DEV_CHAIN_ID):
            return
        now = await self.latest_timestamp()
        if timestamp > now:
            await self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [timestamp - now])
        await self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def _proposal_args(self, inp: GovernorProposeInput) -> tuple[list[str], list[int], list[bytes], bytes]:
        targets, values, datas = [], [], []
        for call in inp.calls:
            target, data = _encode_call(self.w3, self.dep, call)
            targets.append(target)
            values.append(call.value)
            datas.append(data)
        return targets, values, datas, keccak(text=inp.description)

    async def propose(self, inp: GovernorProposeInput) -> GovernorProposal:
        name = self.dep.governors["emergency" if inp.emergency else "normal"]
        gov = self.contract(name)
        targets, values, datas, dhash = self._proposal_args(inp)
        if not targets:
            raise ChainRejected(f"proposal {inp.proposal_key}: the governor backend needs at least one call")
        pid = int(await gov.functions.hashProposal(targets, values, datas, dhash).call())
        if int(await gov.functions.proposalSnapshot(pid).call()) == 0:  # not yet proposed: idempotent by id
            await self.send(gov.functions.propose(targets, values, datas, inp.description), "propose")
        snapshot = int(await gov.functions.proposalSnapshot(pid).call())
        await self._travel_to(snapshot + 1)  # dev chain: open voting now rather than after votingDelay
        return GovernorProposal(
            governor=gov.address, governor_name=await gov.functions.name().call(), chain_id=self.dep.chain_id,
            onchain_id=str(pid), snapshot=snapshot, deadline=int(await gov.functions.proposalDeadline(pid).call()),
            total_supply=int(await self.contract("WestworldToken").functions.getPastTotalSupply(snapshot).call()),
            quorum=int(await gov.functions.quorum(snapshot).call()), description_hash="0x" + dhash.hex(),
            targets=targets, values=values, calldatas=["0x" + d.hex() for d in datas],
        )

    async def relay_vote(self, inp: RelayVoteInput) -> str | None:
        """castVoteBySig with the voter's own Ballot signature; a no-op if the voter already voted."""
        gov = self.governor(inp.governor)
        voter = to_checksum_address(inp.voter)
        if await gov.functions.hasVoted(int(inp.onchain_id), voter).call():
            return None
        sig = bytes.fromhex(inp.signature.removeprefix("0x"))
        tx, _ = await self.send(gov.functions.castVoteBySig(int(inp.onchain_id), inp.support, voter, sig),
                                f"castVoteBySig for {inp.voter}")
        return tx

    async def state(self, g: GovernorProposal) -> GovernorStateResult:
        gov = self.governor(g.governor)
        pid = int(g.onchain_id)
        against, for_, abstain = await gov.functions.proposalVotes(pid).call()
        state = GOVERNOR_STATES[int(await gov.functions.state(pid).call())]
        return GovernorStateResult(state=state, for_votes=for_, against_votes=against, abstain_votes=abstain)

    async def finalize(self, g: GovernorProposal) -> GovernorStateResult:
        st = await self.state(g)
        if st.state in ("Pending", "Active"):
            await self._travel_to(g.deadline + 1)
            st = await self.state(g)
        return st

    async def queue(self, g: GovernorProposal) -> QueueResult:
        gov = self.governor(g.governor)
        pid = int(g.onchain_id)
        tx = None
        if (await self.state(g)).state == "Succeeded":
            tx, _ = await self.send(gov.functions.queue(g.targets, g.values, [bytes.fromhex(d[2:]) for d in g.calldatas],
                                                        bytes.fromhex(g.description_hash[2:])), "queue")
        st = await self.state(g)
        if st.state not in ("Queued", "Executed"):
            raise ChainRejected(f"proposal {g.onchain_id} cannot be queued: it is {st.state}")
        return QueueResult(eta=int(await gov.functions.proposalEta(pid).call()), tx_hash=tx)

    async def execute(self, g: GovernorProposal) -> ExecuteResult:
        gov = self.governor(g.governor)
        st = await self.state(g)
        if st.state == "Executed":
            return ExecuteResult(tx_hash=None, block=None)
        if st.state != "Queued":
            raise ChainRejected(f"proposal {g.onchain_id} cannot be executed: it is {st.state}")
        await self._travel_to(int(await gov.functions.proposalEta(int(g.onchain_id)).call()))
        tx, block = await self.send(gov.functions.execute(g.targets, g.values,
                                                          [bytes.fromhex(d[2:]) for d in g.calldatas],
                                                          bytes.fromhex(g.description_hash[2:])), "execute")
        return ExecuteResult(tx_hash=tx, block=block)

    async def anchor(self, payload: bytes) -> str:
        """Publish ``payload`` as calldata of a zero-value transaction to the relayer itself."""
        async with self._send_lock:
            tx = {"to": self.relayer.address, "value": 0, "data": payload, "chainId": self.dep.chain_id,
                  "nonce": await self.w3.eth.get_transaction_count(self.relayer.address, "pending"),
                  "gas": 100_000, "maxFeePerGas": await self.w3.eth.gas_price * 2, "maxPriorityFeePerGas": 0}
            tx_hash = await self.w3.eth.send_raw_transaction(self.relayer.sign_transaction(tx).raw_transaction)
        await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        return "0x" + bytes(tx_hash).hex()

    @staticmethod
    async def read_ballot_nonce(rpc_url: str, governor: str, voter: str) -> int:
        """For a voter's CLI: the Governor's current ballot nonce of ``voter``."""
        w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
        abi = json.loads('[{"inputs":[{"name":"owner","type":"address"}],"name":"nonces","outputs":'
                         '[{"name":"","type":"uint256"}],"stateMutability":"view","type":"function"}]')
        c = w3.eth.contract(address=to_checksum_address(governor), abi=abi)
        return int(await c.functions.nonces(to_checksum_address(voter)).call())


def _permanent(err: WestworldError) -> ApplicationError:
    return ApplicationError(err.message, type=err.type or CHAIN_REJECTED, non_retryable=True)


class ChainActivities:
    """Temporal activities over a ``ChainClient``; reverts are permanent, connection failures retry."""

    def __init__(self, client: ChainClient) -> None:
        self.c = client

    @activity.defn(name="chain_snapshot")
    async def chain_snapshot(self) -> ChainSnapshot:
        return await self.c.snapshot()

    @activity.defn(name="governor_propose")
    async def governor_propose(self, inp: GovernorProposeInput) -> GovernorProposal:
        try:
            return await self.c.propose(inp)
        except WestworldError as err:
            raise _permanent(err) from err

    @activity.defn(name="governor_state")
    async def governor_state(self, g: GovernorProposal) -> GovernorStateResult:
        return await self.c.state(g)

    @activity.defn(name="governor_finalize")
    async def governor_finalize(self, g: GovernorProposal) -> GovernorStateResult:
        return await self.c.finalize(g)

    @activity.defn(name="governor_queue")
    async def governor_queue(self, g: GovernorProposal) -> QueueResult:
        try:
            return await self.c.queue(g)
        except WestworldError as err:
            raise _permanent(err) from err

    @activity.defn(name="governor_execute")
    async def governor_execute(self, g: GovernorProposal) -> ExecuteResult:
        try:
            return await self.c.execute(g)
        except WestworldError as err:
            raise _permanent(err) from err
