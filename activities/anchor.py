"""Anchoring the audit log's root on chain, and reading the latest anchor back.

An anchor is the calldata of a zero-value transaction from the relayer to itself: (log key, size, root). Only
transactions *from the relayer* count, so nobody else can plant an anchor. The latest anchor of a log is found
by walking the relayer's own transactions back from the chain's head (the Otterscan API, which anvil, Erigon and
Reth serve) or, on a node without it, whole blocks a batch at a time, until one is found or ``lookback`` blocks
were passed; anchors are hourly, so the walk is short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from eth_utils.address import to_checksum_address
from temporalio import activity
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

from activities.chain import ChainClient
from activities.charter_chain import CharterChain
from westworld.audit_anchor import AnchoredHead, LogHead, anchor_payload, parse_anchor
from westworld.chain import CHARTER
from westworld.errors import OtterscanUnavailable

ANCHOR_LOOKBACK_BLOCKS = 50_000
BATCH = 25


def _hex(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return text if text.startswith("0x") else "0x" + text


def _anchor_of(tx: Mapping[str, Any], me: str, log_key: str, block: int) -> AnchoredHead | None:
    if str(tx.get("from", "")).lower() != me.lower() or str(tx.get("to") or "").lower() != me.lower():
        return None
    data = tx.get("input", b"")
    parsed = parse_anchor(bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data))
    if parsed is None or parsed[2] != log_key:
        return None
    return AnchoredHead(tree_size=parsed[0], root=parsed[1], log_key=log_key, tx_hash=_hex(tx["hash"]), block=block)


async def _by_sender_index(w3: AsyncWeb3[Any], me: str, log_key: str, bottom: int) -> AnchoredHead | None:
    """Walk the sender's own transactions newest first (``ots_searchTransactionsBefore``: anvil, Erigon, Reth)."""
    before = 0  # 0: from the head
    while True:
        response: Any = await w3.provider.make_request(RPCEndpoint("ots_searchTransactionsBefore"), [me, before, BATCH])
        if "error" in response:
            raise OtterscanUnavailable(str(response["error"]))
        txs = sorted(response["result"]["txs"], reverse=True, key=lambda t: (
            int(t["blockNumber"], 16), int(t.get("transactionIndex") or "0x0", 16)))
        for tx in txs:
            block = int(tx["blockNumber"], 16)
            if block < bottom:
                return None
            if (found := _anchor_of(tx, me, log_key, block)) is not None:
                return found
        if not txs or response["result"].get("lastPage"):
            return None
        before = int(txs[-1]["blockNumber"], 16)


async def _by_blocks(w3: AsyncWeb3[Any], me: str, log_key: str, top: int, bottom: int) -> AnchoredHead | None:
    """Read whole blocks back from ``top``, a batch at a time (any node)."""
    hi = top
    while hi >= bottom:
        numbers = range(hi, max(hi - BATCH, bottom - 1), -1)
        blocks = await asyncio.gather(*(w3.eth.get_block(n, full_transactions=True) for n in numbers))
        for block in blocks:  # newest first; in a block, the last transaction is the newest
            for tx in reversed(list(block["transactions"])):
                if isinstance(tx, Mapping) and (found := _anchor_of(tx, me, log_key, int(block["number"]))):
                    return found
        hi -= BATCH
    return None


async def find_latest_anchor(
    w3: AsyncWeb3[Any], sender: str, log_key: str, lookback: int = ANCHOR_LOOKBACK_BLOCKS, *, index: bool = True
) -> AnchoredHead | None:
    """The newest anchor ``sender`` sent to itself for ``log_key``, within ``lookback`` blocks of the head.

    With ``index`` the sender's own transactions are walked through the node's Otterscan API when it has one;
    otherwise (or without it) whole blocks are read back.
    """
    me = to_checksum_address(sender)
    top = int(await w3.eth.block_number)
    bottom = max(top - lookback, 0)
    if index:
        try:
            return await _by_sender_index(w3, me, log_key, bottom)
        except OtterscanUnavailable:
            pass
    return await _by_blocks(w3, me, log_key, top, bottom)


async def read_latest_anchor(rpc_url: str, sender: str, log_key: str) -> AnchoredHead | None:
    """:func:`find_latest_anchor` over a connection of its own (for the CLI)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        return await find_latest_anchor(w3, sender, log_key)
    finally:
        await w3.provider.disconnect()


class AnchorActivities:
    def __init__(self, chain: ChainClient) -> None:
        self._chain = chain

    async def latest_anchor(self, log_key: str) -> AnchoredHead | None:
        """The newest anchor of ``log_key`` this worker's relayer put on chain."""
        return await find_latest_anchor(self._chain.w3, self._chain.relayer.address, log_key)

    @activity.defn(name="anchor_root")
    async def anchor_root(self, head: LogHead) -> str:
        """Publish (log key, tree size, root); idempotent per workflow run through the activity's own retries only."""
        w3, relayer = self._chain.w3, self._chain.relayer
        tx: dict[str, Any] = {
            "to": relayer.address, "value": 0, "data": anchor_payload(head.tree_size, head.root, head.log_key),
            "chainId": self._chain.dep.chain_id, "gas": 60_000,
            "nonce": await w3.eth.get_transaction_count(relayer.address, "pending"),
            "gasPrice": await w3.eth.gas_price,
        }
        tx_hash = await w3.eth.send_raw_transaction(relayer.sign_transaction(tx).raw_transaction)
        await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if CHARTER in self._chain.dep.addresses and head.tree_size > 0:
            # the hourly anchor also goes to the Charter's checkpoints (idempotent by its latest checkpoint)
            await CharterChain(self._chain).anchor_checkpoint(head.tree_size, head.root)
        return "0x" + bytes(tx_hash).hex()
