"""Deploying the project's contracts, and giving holders voting power (used by `westworld up`, `westworld vote
delegate|faucet`, tests, bench, demo).

The deployment: the token (timestamp clock), one timelock, a normal Governor (72 h) and an emergency Governor
(2 h) that both propose to and cancel on that timelock, MeshConfig owned by the timelock, and an airdrop helper.
The timelock's executor role is open to anyone and the deployer renounces its admin role once roles are set,
so only proposals that pass can change MeshConfig. The deployer stays the token's owner (it can mint): on a
real chain, transfer that ownership to the timelock after the initial distribution.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from activities.chain import Web3Client, connect_web3
from activities.chain_tx import Signer, is_dev_chain, latest_timestamp, load_deployment, save_deployment
from activities.charter_chain import DEFAULT_CHARTER_FILE, charter_constructor_args, charter_metric_calls
from activities.policy import DEFAULT_POLICY_FILE, read_policy_file
from westworld.chain import (
    AIRDROP,
    CHARTER,
    EMERGENCY_GOVERNOR,
    GOVERNOR,
    MESH_CONFIG,
    TIMELOCK,
    TOKEN,
    Deployment,
    GovernorParams,
)
from westworld.errors import CONFIG_ERROR, PermanentError
from westworld.policy import POLICY_HASH_KEY, policy_hash

REPO = Path(__file__).resolve().parents[2]
BUILD_FILE = REPO / "contracts" / "build" / "Contracts.json"
INITIAL_SUPPLY = 1_000_000 * 10**18
GRANTS_PER_TX = 100
# anvil's first well-known development account: only ever used on a local dev chain.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
_ZERO_ADDRESS = "0x" + "00" * 20


def load_artifacts(path: Path = BUILD_FILE) -> dict[str, Any]:
    """{contract name: {abi, bytecode}} written by ``node contracts/build.mjs``."""
    if not path.exists():
        raise PermanentError(f"{path} is missing: compile the contracts with `node contracts/build.mjs` "
                             "(`./dev up` does it)", type=CONFIG_ERROR)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def _deploy(tx: Signer, art: dict[str, Any], name: str, *args: Any) -> str:
    factory = tx.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    _, _, receipt = await tx.send(factory.constructor(*args), f"deploy {name}")
    return str(receipt["contractAddress"])


async def deploy_contracts(
    rpc_url: str, deployer_key: str, build_json_path: Path = BUILD_FILE, *, timelock_delay: int = 3600,
    voting_delay: int = 1, normal_period: int = 72 * 3600, emergency_period: int = 2 * 3600,
    quorum_percent: int = 4, initial_supply: int = INITIAL_SUPPLY,
    initial_parameters: dict[str, str] | None = None, charter_file: Path = DEFAULT_CHARTER_FILE,
) -> Deployment:
    """Deploy every contract, wire the timelock roles, renounce the deployer's admin; return the record.

    ``initial_parameters`` are MeshConfig's values from the start; by default the hash of the shipped network
    policy (``deploy/policy.yaml``), which the worker then enforces. The Charter starts at ``charter_file``'s
    version and hash with its per-metric flags. Later changes go through the DAO."""
    params = initial_parameters if initial_parameters is not None else default_parameters()
    w3 = connect_web3(rpc_url)
    acct: LocalAccount = Account.from_key(deployer_key)
    arts = load_artifacts(build_json_path)
    chain_id = int(await w3.eth.chain_id)
    tx = Signer(w3, acct, chain_id, [a["abi"] for a in arts.values()])
    addr: dict[str, str] = {}
    addr[TOKEN] = await _deploy(tx, arts["WestworldToken"], TOKEN, initial_supply)
    addr[TIMELOCK] = await _deploy(tx, arts["WestworldTimelock"], TIMELOCK, timelock_delay, [], [_ZERO_ADDRESS],
                                   acct.address)
    governors = {
        GOVERNOR: GovernorParams(name="Westworld Governor", voting_delay=voting_delay,
                                 voting_period=normal_period, quorum_percent=quorum_percent),
        EMERGENCY_GOVERNOR: GovernorParams(name="Westworld Emergency Governor", voting_delay=voting_delay,
                                           voting_period=emergency_period, quorum_percent=quorum_percent),
    }
    for name, p in governors.items():
        addr[name] = await _deploy(tx, arts["WestworldGovernor"], name, p.name, addr[TOKEN], addr[TIMELOCK],
                                   p.voting_delay, p.voting_period, p.quorum_percent)
    addr[MESH_CONFIG] = await _deploy(tx, arts["MeshConfig"], MESH_CONFIG, addr[TIMELOCK],
                                      list(params), list(params.values()))
    addr[AIRDROP] = await _deploy(tx, arts["VotingPowerAirdrop"], AIRDROP)
    addr[CHARTER] = await deploy_charter(tx, arts, addr[TIMELOCK], charter_file)
    artifact_of = {TOKEN: "WestworldToken", TIMELOCK: "WestworldTimelock", GOVERNOR: "WestworldGovernor",
                   EMERGENCY_GOVERNOR: "WestworldGovernor", MESH_CONFIG: "MeshConfig", AIRDROP: "VotingPowerAirdrop",
                   CHARTER: "Charter"}
    timelock = w3.eth.contract(address=to_checksum_address(addr[TIMELOCK]), abi=arts["WestworldTimelock"]["abi"])
    for gov in (GOVERNOR, EMERGENCY_GOVERNOR):
        for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
            role_id = await getattr(timelock.functions, role)().call()
            await tx.send(timelock.functions.grantRole(role_id, addr[gov]), f"grant {role} to {gov}")
    admin = await timelock.functions.DEFAULT_ADMIN_ROLE().call()
    await tx.send(timelock.functions.renounceRole(admin, acct.address), "renounce the timelock admin role")
    await w3.provider.disconnect()
    return Deployment(
        chain_id=chain_id, deployer=acct.address, addresses=addr,
        abis={name: arts[artifact]["abi"] for name, artifact in artifact_of.items()},
        timelock_delay=timelock_delay, governors=governors,
    )


async def deploy_charter(tx: Signer, arts: dict[str, Any], timelock: str, charter_file: Path) -> str:
    """The Charter at ``charter_file``'s version and hash, its per-metric flags set, then owned by ``timelock``.

    The deployer owns it only while it sets the initial flags (one transaction per metric), then hands it to the
    timelock: from there on, only a DAO vote executed through the timelock changes it."""
    version, digest = charter_constructor_args(charter_file)
    address = await _deploy(tx, arts["Charter"], CHARTER, tx.account.address, version, digest)
    charter = tx.w3.eth.contract(address=to_checksum_address(address), abi=arts["Charter"]["abi"])
    for name, consent, retention in charter_metric_calls(charter_file):
        await tx.send(charter.functions.setMetric(name, True, consent, retention), f"charter metric {name}")
    # the worker's relayer anchors the audit log's checkpoints hourly (it can append a head, change no rule)
    await tx.send(charter.functions.setAnchorer(tx.account.address), "let the relayer anchor audit checkpoints")
    await tx.send(charter.functions.transferOwnership(to_checksum_address(timelock)), "hand it to the timelock")
    return address


def default_parameters(policy_file: Path = DEFAULT_POLICY_FILE) -> dict[str, str]:
    """MeshConfig's parameters at deployment: the hash of the network policy in ``policy_file``."""
    return {POLICY_HASH_KEY: policy_hash(read_policy_file(policy_file))}


async def deploy_if_needed(rpc_url: str, deployer_key: str, contracts_file: Path, *, timelock_delay: int = 20,
                           policy_file: Path = DEFAULT_POLICY_FILE,
                           charter_file: Path = DEFAULT_CHARTER_FILE) -> bool:
    """Deploy unless ``contracts_file`` names contracts that exist on this chain. True if it deployed.

    The local stack uses a short timelock delay (20 s) so the demo runs through in a minute.
    """
    if contracts_file.exists():
        dep = load_deployment(contracts_file, rpc_url)
        w3 = connect_web3(rpc_url)
        try:
            if dep.chain_id == int(await w3.eth.chain_id):
                codes = [await w3.eth.get_code(to_checksum_address(a)) for a in dep.addresses.values()]
                if all(len(c) > 0 for c in codes):
                    if CHARTER in dep.addresses:
                        return False
                    save_deployment(contracts_file, await add_charter(w3, dep, deployer_key, charter_file))
                    return True
        finally:
            await w3.provider.disconnect()
    save_deployment(contracts_file, await deploy_contracts(
        rpc_url, deployer_key, timelock_delay=timelock_delay, initial_parameters=default_parameters(policy_file),
        charter_file=charter_file))
    return True


async def add_charter(w3: Web3Client, dep: Deployment, deployer_key: str, charter_file: Path) -> Deployment:
    """A deployment recorded before the Charter existed: deploy it beside the others (same timelock)."""
    arts = load_artifacts()
    tx = Signer(w3, Account.from_key(deployer_key), dep.chain_id, [a["abi"] for a in arts.values()])
    address = await deploy_charter(tx, arts, dep.address(TIMELOCK), charter_file)
    return dep.model_copy(update={"addresses": {**dep.addresses, CHARTER: address},
                                  "abis": {**dep.abis, CHARTER: arts["Charter"]["abi"]}})


def delegation_signature(holder: LocalAccount, token: str, chain_id: int, nonce: int, expiry: int) -> Any:
    """The holder's EIP-712 ``Delegation`` to itself (ERC20Votes.delegateBySig; domain of ERC20Permit)."""
    msg = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Delegation": [{"name": "delegatee", "type": "address"}, {"name": "nonce", "type": "uint256"},
                           {"name": "expiry", "type": "uint256"}],
        },
        "primaryType": "Delegation",
        "domain": {"name": "Westworld", "version": "1", "chainId": chain_id, "verifyingContract": token},
        "message": {"delegatee": holder.address, "nonce": nonce, "expiry": expiry},
    }
    return holder.sign_message(encode_typed_data(full_message=msg))


async def distribute_voting_power(
    rpc: str | Web3Client, dep: Deployment, holders: Mapping[str, float | int],
    deployer_key: str | None = None, *, as_share_of_supply: bool = False, fresh: bool = False,
) -> int:
    """Top each holder (private key -> wei, or share of the supply) up to its amount and self-delegate it.

    Holders sign their own delegation (EIP-712 ``delegateBySig``), so they need no ETH; the deployer pays gas
    and sends the tokens through ``VotingPowerAirdrop`` in batches. Idempotent: holders already at their amount
    and delegated are skipped. ``deployer_key`` defaults to anvil's dev key on a dev chain. Returns the supply.
    """
    if deployer_key is None:
        if not is_dev_chain(dep.chain_id):
            raise PermanentError("distribute_voting_power: pass the deployer key on a non-dev chain",
                                 type=CONFIG_ERROR)
        deployer_key = ANVIL_DEV_KEY
    w3 = connect_web3(rpc) if isinstance(rpc, str) else rpc
    deployer: LocalAccount = Account.from_key(deployer_key)
    tx = Signer(w3, deployer, dep.chain_id, dep.abis.values())
    token = w3.eth.contract(address=to_checksum_address(dep.address(TOKEN)), abi=dep.abis[TOKEN])
    airdrop = w3.eth.contract(address=to_checksum_address(dep.address(AIRDROP)), abi=dep.abis[AIRDROP])
    supply = int(await token.functions.totalSupply().call())
    expiry = await latest_timestamp(w3) + 3600
    grants: list[tuple[str, int, int, int, int, bytes, bytes]] = []
    needed = 0
    for key, amount in holders.items():
        holder: LocalAccount = Account.from_key(key)
        target = int(Decimal(str(amount)) * supply) if as_share_of_supply else int(amount)
        if fresh:  # new accounts: nothing to read back (many holders at once, e.g. benchmarks)
            top_up, nonce = target, 0
        else:
            balance = int(await token.functions.balanceOf(holder.address).call())
            delegate = await token.functions.delegates(holder.address).call()
            top_up = max(target - balance, 0)
            if top_up == 0 and delegate == holder.address:
                continue
            nonce = int(await token.functions.nonces(holder.address).call())
        sig = delegation_signature(holder, token.address, dep.chain_id, nonce, expiry)
        grants.append((holder.address, top_up, nonce, expiry, sig.v, sig.r.to_bytes(32, "big"),
                       sig.s.to_bytes(32, "big")))
        needed += top_up
    if grants:
        await tx.send(token.functions.approve(airdrop.address, needed), "approve the airdrop")
        for i in range(0, len(grants), GRANTS_PER_TX):
            await tx.send(airdrop.functions.airdrop(token.address, grants[i:i + GRANTS_PER_TX]),
                          f"airdrop voting power (holders {i}..{i + GRANTS_PER_TX - 1})")
    if isinstance(rpc, str):
        await w3.provider.disconnect()
    return supply


async def relay_delegation(rpc_url: str, dep: Deployment, holder_key: str, relayer_key: str) -> tuple[str, int]:
    """The holder delegates its votes to itself: it only signs (EIP-712 ``Delegation``), the relayer sends
    ``delegateBySig`` and pays the gas (the pattern of :func:`distribute_voting_power`). Returns (tx hash, votes).

    A holder already delegated to itself sends nothing (tx hash ``""``): the call is idempotent."""
    w3 = connect_web3(rpc_url)
    try:
        holder: LocalAccount = Account.from_key(holder_key)
        token = w3.eth.contract(address=to_checksum_address(dep.address(TOKEN)), abi=dep.abis[TOKEN])
        tx_hash = ""
        if await token.functions.delegates(holder.address).call() != holder.address:
            tx = Signer(w3, Account.from_key(relayer_key), dep.chain_id, dep.abis.values())
            nonce = int(await token.functions.nonces(holder.address).call())
            expiry = await latest_timestamp(w3) + 3600
            sig = delegation_signature(holder, token.address, dep.chain_id, nonce, expiry)
            tx_hash, _, _ = await tx.send(token.functions.delegateBySig(
                holder.address, nonce, expiry, sig.v, sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")),
                f"delegateBySig for {holder.address}")
        return tx_hash, int(await token.functions.getVotes(holder.address).call())
    finally:
        await w3.provider.disconnect()


async def send_tokens(rpc_url: str, dep: Deployment, sender_key: str, to: str, amount: int) -> tuple[str, int]:
    """Transfer ``amount`` (wei) of the token from ``sender_key``'s account to ``to``; (tx hash, new balance).

    A sender without enough tokens is refused before anything is sent, naming what it holds."""
    w3 = connect_web3(rpc_url)
    try:
        sender: LocalAccount = Account.from_key(sender_key)
        token = w3.eth.contract(address=to_checksum_address(dep.address(TOKEN)), abi=dep.abis[TOKEN])
        held = int(await token.functions.balanceOf(sender.address).call())
        if held < amount:
            raise PermanentError(f"the deployer account {sender.address} holds {Decimal(held) / 10**18} tokens, "
                                 f"fewer than the {Decimal(amount) / 10**18} asked", type=CONFIG_ERROR)
        tx = Signer(w3, sender, dep.chain_id, dep.abis.values())
        recipient = to_checksum_address(to)
        tx_hash, _, _ = await tx.send(token.functions.transfer(recipient, amount), f"transfer to {recipient}")
        return tx_hash, int(await token.functions.balanceOf(recipient).call())
    finally:
        await w3.provider.disconnect()


async def voting_power_of(rpc_url: str, dep: Deployment, address: str) -> tuple[int, str, int]:
    """(token balance, the address its votes are delegated to, current votes) of ``address``, in wei."""
    w3 = connect_web3(rpc_url)
    try:
        token = w3.eth.contract(address=to_checksum_address(dep.address(TOKEN)), abi=dep.abis[TOKEN])
        who = to_checksum_address(address)
        return (int(await token.functions.balanceOf(who).call()), str(await token.functions.delegates(who).call()),
                int(await token.functions.getVotes(who).call()))
    finally:
        await w3.provider.disconnect()


async def chain_id_of(rpc_url: str) -> int:
    """The chain id the node at ``rpc_url`` reports (31337: a local anvil)."""
    w3 = connect_web3(rpc_url)
    try:
        return int(await w3.eth.chain_id)
    finally:
        await w3.provider.disconnect()
