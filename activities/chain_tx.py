"""Chain transport: sign and send transactions safely, read contracts, decode reverts, travel in time on a dev chain.

Shared by the chain client (``activities/chain.py``) and the deployer (``workers/stack/contracts.py``).
A revert is permanent (:class:`westworld.errors.ChainRejected`, carrying the decoded reason); a node that does
not answer raises the HTTP client's own error, which Temporal retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint

from westworld.chain import DEV_CHAIN_ID, Deployment
from westworld.errors import CONFIG_ERROR, ChainRejected, PermanentError

RECEIPT_TIMEOUT = 120.0


def save_deployment(path: Path, dep: Deployment) -> None:
    """Write the deployment record (addresses and ABIs) as JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dep.model_dump_json(indent=1))


def load_deployment(path: Path, rpc_url: str = "the configured chain") -> Deployment:
    """Read the deployment record; a clear ``PermanentError`` if there is none."""
    try:
        return Deployment.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise PermanentError(
            f"no contracts deployed at {rpc_url} ({path} is missing); run `westworld up`", type=CONFIG_ERROR
        ) from None


def error_selectors(abis: Iterable[list[dict[str, Any]]]) -> dict[str, tuple[str, list[str], list[str]]]:
    """Custom errors of the ABIs by 0x selector: (name, argument names, argument types)."""
    out: dict[str, tuple[str, list[str], list[str]]] = {}
    for abi in abis:
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [str(i["type"]) for i in item.get("inputs", [])]
            sig = f"{item['name']}({','.join(types)})"
            out["0x" + keccak(text=sig)[:4].hex()] = (
                str(item["name"]), [str(i.get("name", "")) for i in item.get("inputs", [])], types
            )
    return out


def revert_reason(err: ContractLogicError, errors: dict[str, tuple[str, list[str], list[str]]]) -> str:
    """A readable reason: ``Error(string)`` text, or a custom error with its decoded arguments."""
    data = err.data if isinstance(err.data, str) else ""
    if data.startswith("0x") and len(data) >= 10 and data[:10] in errors:
        name, names, types = errors[data[:10]]
        try:
            values = abi_decode(types, bytes.fromhex(data[10:]))
        except Exception:  # malformed payload: the name alone still says what went wrong
            return name
        shown = ", ".join(f"{n}={_show(v)}" if n else _show(v) for n, v in zip(names, values, strict=True))
        return f"{name}({shown})"
    return str(err.message or err)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


class Signer:
    """Signs with one local key and sends; sends are serialised so concurrent activities never reuse a nonce."""

    def __init__(self, w3: AsyncWeb3[Any], account: LocalAccount, chain_id: int,
                 abis: Iterable[list[dict[str, Any]]] = ()) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.errors = error_selectors(abis)
        self._lock = asyncio.Lock()

    def rejected(self, err: ContractLogicError, what: str) -> ChainRejected:
        return ChainRejected(f"{what} reverted: {revert_reason(err, self.errors)}")

    async def call(self, fn: Any, what: str) -> Any:
        """``fn.call()``; a revert becomes ``ChainRejected`` with its decoded reason."""
        try:
            return await fn.call()
        except ContractLogicError as err:
            raise self.rejected(err, what) from err

    async def send(self, fn: Any, what: str, value: int = 0) -> tuple[str, int, Any]:
        """Sign and send a contract call (or constructor); returns (0x tx hash, block, receipt).

        The gas estimate simulates the call first, so a revert is reported with its reason before anything is
        sent. A mined transaction with status 0 is also ``ChainRejected``.
        """
        async with self._lock:
            # The node's pending count already includes what this lock let through, and follows evm_revert;
            # a local counter would not.
            nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
            try:
                tx = await fn.build_transaction(
                    {"from": self.account.address, "nonce": nonce, "chainId": self.chain_id, "value": value}
                )
            except ContractLogicError as err:
                raise self.rejected(err, what) from err
            signed = self.account.sign_transaction(tx)
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT)
        hex_hash = "0x" + bytes(tx_hash).hex()
        if receipt["status"] != 1:
            raise ChainRejected(f"{what} reverted on chain in tx {hex_hash} (block {receipt['blockNumber']})")
        return hex_hash, int(receipt["blockNumber"]), receipt


async def latest_timestamp(w3: AsyncWeb3[Any]) -> int:
    """Timestamp of the latest block: the clock of the token, the Governor and the timelock."""
    return int((await w3.eth.get_block("latest"))["timestamp"])


async def travel_to(w3: AsyncWeb3[Any], timestamp: int) -> int:
    """Dev chain only (the caller checks): mine a block whose timestamp is at least ``timestamp``.

    Returns the new latest timestamp. ``evm_increaseTime`` adds to anvil's clock offset, so the next block
    lands at (or, by the wall-clock time spent, slightly after) the target.
    """
    now = await latest_timestamp(w3)
    if timestamp > now:
        await w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [timestamp - now])
    await w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    return await latest_timestamp(w3)


def is_dev_chain(chain_id: int) -> bool:
    return chain_id == DEV_CHAIN_ID
