"""`westworld vote keygen | faucet | delegate | power`: your own voter key and voting power.

Voting power on the token (ERC20Votes) counts only once its holder delegates it, to itself or another; a vote weighs
each ballot by the power its voter had when the vote opened. So a new voter: makes a key (``keygen``), gets tokens
(on the local dev chain from ``faucet``; on a real network from whoever holds them), delegates to itself
(``delegate``), and can vote in every vote that opens after that.

``delegate`` follows :func:`workers.stack.contracts.distribute_voting_power`: the holder's key only signs an EIP-712
``Delegation``; the relayer (``WESTWORLD_CHAIN_DEPLOYER_KEY``, the key that also relays votes) sends
``delegateBySig`` and pays the gas, so a voter needs no ETH. ``faucet`` exists on the local dev chain only.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

from eth_account import Account
from eth_utils.address import is_address, to_checksum_address

from activities.chain_tx import is_dev_chain, load_deployment
from westworld.chain import DEV_CHAIN_ID
from workers.cli.common import fail
from workers.cli.vote import read_key
from workers.settings import ANVIL_DEV_KEY, Settings
from workers.stack.contracts import chain_id_of, relay_delegation, send_tokens, voting_power_of

WEI = 10**18


def tokens(wei: int) -> str:
    """``wei`` as tokens (18 decimals), without trailing zeros: ``100000``, ``0.5``."""
    text = format(Decimal(wei) / WEI, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_tokens(text: str) -> int:
    """A positive token amount (``100000``, ``0.5``) in wei; the error exit if it is not one."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise fail(f"--tokens: {text!r} is not a number of tokens (e.g. 100000 or 0.5)") from None
    wei = amount * WEI
    if not amount.is_finite() or amount <= 0 or wei != wei.to_integral_value():
        raise fail(f"--tokens: {text!r} must be a positive amount with at most 18 decimals")
    return int(wei)


def address_of(target: str) -> str:
    """A 0x address as given, or the address of the key in the file ``target``."""
    if target.startswith("0x"):
        if not is_address(target):
            raise fail(f"{target!r} is not an Ethereum address (0x and 40 hex digits)")
        return to_checksum_address(target)
    return str(Account.from_key(read_key(Path(target))).address)


def keygen(out: Path) -> str:
    """Write a new voter key to ``out`` (mode 0600, never over an existing file); its address."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise fail(f"{out} exists: a key file is never overwritten (pick another name)") from None
    except OSError as err:
        raise fail(f"{out}: cannot write: {err.strerror}") from err
    acct = Account.create()
    with os.fdopen(fd, "w") as f:
        f.write(acct.key.hex() + "\n")
    return str(acct.address)


async def faucet(s: Settings, target: str, amount: int) -> list[str]:
    """Send ``amount`` wei of the token to ``target`` from the local deployer account (dev chain only)."""
    to = address_of(target)
    chain_id = await chain_id_of(s.chain_rpc_url)
    if not is_dev_chain(chain_id):
        raise fail(f"the faucet runs only on the local dev chain (chain id {DEV_CHAIN_ID}); {s.chain_rpc_url} is "
                   f"chain {chain_id}: ask a token holder to transfer you tokens, then `westworld vote delegate`")
    dep = load_deployment(s.contracts_file, s.chain_rpc_url)
    tx_hash, balance = await send_tokens(s.chain_rpc_url, dep, s.chain_deployer_key, to, amount)
    _, delegate, votes = await voting_power_of(s.chain_rpc_url, dep, to)
    lines = [f"sent {tokens(amount)} tokens to {to} (tx {tx_hash}); balance {tokens(balance)} tokens, "
             f"voting power {tokens(votes)} tokens"]
    if delegate != to:
        lines.append("tokens count as votes only once delegated: run `westworld vote delegate --key <its key file>`")
    return lines


async def delegate(s: Settings, key_file: Path) -> list[str]:
    """The key's holder delegates its votes to itself; the relayer sends the signed delegation."""
    key = read_key(key_file)
    address = str(Account.from_key(key).address)
    dep = load_deployment(s.contracts_file, s.chain_rpc_url)
    if not is_dev_chain(dep.chain_id) and s.chain_deployer_key == ANVIL_DEV_KEY:
        raise fail(f"chain {dep.chain_id} is not the local dev chain: set WESTWORLD_CHAIN_DEPLOYER_KEY to a relayer "
                   "key that holds gas on it (anvil's public dev key has none there)")
    balance, _, _ = await voting_power_of(s.chain_rpc_url, dep, address)
    if balance == 0:
        hint = (f"`westworld vote faucet {address} --tokens 100000`" if is_dev_chain(dep.chain_id)
                else "ask a token holder to transfer you tokens")
        raise fail(f"{address} holds no tokens, so it has no votes to delegate: {hint}, then delegate again")
    tx_hash, votes = await relay_delegation(s.chain_rpc_url, dep, key, s.chain_deployer_key)
    done = f"delegated to itself (tx {tx_hash})" if tx_hash else "already delegated to itself"
    return [f"{address} {done}: voting power {tokens(votes)} tokens",
            "votes that open from now on count it (a vote weighs the power its voters had when it opened)"]


async def power(s: Settings, target: str) -> list[str]:
    """Balance, delegate and voting power of an address (or of a key file's address)."""
    address = address_of(target)
    dep = load_deployment(s.contracts_file, s.chain_rpc_url)
    balance, delegate_to, votes = await voting_power_of(s.chain_rpc_url, dep, address)
    zero = "0x" + "00" * 20
    delegated = ("not delegated" if delegate_to == zero
                 else "delegated to itself" if delegate_to == address else f"delegated to {delegate_to}")
    return [f"{address}: balance {tokens(balance)} tokens ({delegated}); voting power {tokens(votes)} tokens"]
