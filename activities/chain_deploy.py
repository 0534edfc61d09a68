"""Deploying the project's contracts to a chain, and giving holders voting power (used by `up`, tests, bench)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.chain import ChainClient, load_deployment, save_deployment
from westworld.chain import Deployment

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "contracts" / "build" / "Contracts.json"
INITIAL_SUPPLY = 1_000_000 * 10**18
GRANTS_PER_TX = 100



def _artifacts(build: Path = BUILD) -> dict[str, Any]:
    if not build.exists():
        raise FileNotFoundError(f"{build} is missing: compile the contracts with `node contracts/build.mjs`")
    data: dict[str, Any] = json.loads(build.read_text())
    return data


async def _deploy(w3: AsyncWeb3, acct: LocalAccount, art: dict[str, Any], *args: Any) -> str:
    c = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = await c.constructor(*args).build_transaction({
        "from": acct.address, "nonce": await w3.eth.get_transaction_count(acct.address, "pending")})
    tx_hash = await w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash)
    return str(receipt["contractAddress"])


async def deploy_contracts(rpc_url: str, deployer_key: str, *, timelock_delay: int = 3600, voting_delay: int = 1,
                           normal_period: int = 72 * 3600, emergency_period: int = 2 * 3600,
                           quorum_percent: int = 4) -> Deployment:
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    acct: LocalAccount = Account.from_key(deployer_key)
    arts = _artifacts()
    chain_id = await w3.eth.chain_id
    addr: dict[str, str] = {}
    addr["WestworldToken"] = await _deploy(w3, acct, arts["WestworldToken"], INITIAL_SUPPLY)
    addr["WestworldTimelock"] = await _deploy(w3, acct, arts["WestworldTimelock"], timelock_delay, [],
                                              ["0x" + "00" * 20], acct.address)
    for name, label, period in (("WestworldGovernor", "Westworld Governor", normal_period),
                                ("EmergencyGovernor", "Westworld Emergency Governor", emergency_period)):
        addr[name] = await _deploy(w3, acct, arts["WestworldGovernor"], label, addr["WestworldToken"],
                                   addr["WestworldTimelock"], voting_delay, period, quorum_percent)
    addr["MeshConfig"] = await _deploy(w3, acct, arts["MeshConfig"], addr["WestworldTimelock"])
    addr["VotingPowerAirdrop"] = await _deploy(w3, acct, arts["VotingPowerAirdrop"])
    abis = {n: arts[n]["abi"] for n in arts} | {"EmergencyGovernor": arts["WestworldGovernor"]["abi"]}
    dep = Deployment(chain_id=chain_id, rpc_url=rpc_url, deployer=acct.address, addresses=addr, abis=abis,
                     timelock_delay=timelock_delay,
                     governors={"normal": "WestworldGovernor", "emergency": "EmergencyGovernor"})
    client = ChainClient(w3, dep, acct, dev_time_travel=False)
    timelock = client.contract("WestworldTimelock")
    for gov in ("WestworldGovernor", "EmergencyGovernor"):
        for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
            role_id = await getattr(timelock.functions, role)().call()
            await client.send(timelock.functions.grantRole(role_id, addr[gov]), f"grant {role} to {gov}")
    admin = await timelock.functions.DEFAULT_ADMIN_ROLE().call()
    await client.send(timelock.functions.renounceRole(admin, acct.address), "renounce timelock admin")
    return dep


async def deploy_if_needed(rpc_url: str, deployer_key: str, contracts_file: Path, *, timelock_delay: int = 20) -> bool:
    """Deploy unless ``contracts_file`` names contracts that exist on this chain. True if it deployed."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    if contracts_file.exists():
        dep = load_deployment(contracts_file)
        code = await w3.eth.get_code(to_checksum_address(dep.addresses["WestworldToken"]))
        if dep.chain_id == await w3.eth.chain_id and len(code) > 0:
            return False
    save_deployment(contracts_file, await deploy_contracts(rpc_url, deployer_key, timelock_delay=timelock_delay))
    return True


def _delegation_signature(holder: LocalAccount, token: str, chain_id: int, nonce: int, expiry: int) -> Any:
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


async def distribute_voting_power(rpc_url: str, dep: Deployment, holders: Mapping[str, float | int],
                                  deployer_key: str, *, as_share_of_supply: bool = False) -> int:
    """Top each holder (private key -> amount, or share of supply) up to its amount and self-delegate it.

    Holders sign their own delegation (EIP-712, delegateBySig); the deployer pays gas and sends the tokens
    through ``VotingPowerAirdrop`` in batches. Returns the token's total supply.
    """
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    deployer: LocalAccount = Account.from_key(deployer_key)
    client = ChainClient(w3, dep, deployer, dev_time_travel=False)
    token = client.contract("WestworldToken")
    airdrop = client.contract("VotingPowerAirdrop")
    supply = int(await token.functions.totalSupply().call())
    expiry = await client.latest_timestamp() + 3600
    grants: list[tuple[str, int, int, int, int, bytes, bytes]] = []
    needed = 0
    for key, amount in holders.items():
        holder: LocalAccount = Account.from_key(key)
        target = int(supply * amount) if as_share_of_supply else int(amount)
        balance = int(await token.functions.balanceOf(holder.address).call())
        delegate = await token.functions.delegates(holder.address).call()
        top_up = max(target - balance, 0)
        if top_up == 0 and delegate == holder.address:
            continue
        nonce = int(await token.functions.nonces(holder.address).call())
        sig = _delegation_signature(holder, token.address, dep.chain_id, nonce, expiry)
        grants.append((holder.address, top_up, nonce, expiry, sig.v, sig.r.to_bytes(32, "big"),
                       sig.s.to_bytes(32, "big")))
        needed += top_up
    if grants:
        await client.send(token.functions.approve(airdrop.address, needed), "approve airdrop")
        for i in range(0, len(grants), GRANTS_PER_TX):
            await client.send(airdrop.functions.airdrop(token.address, grants[i:i + GRANTS_PER_TX]),
                              f"airdrop voting power ({i}..{i + GRANTS_PER_TX})")
    return supply
