"""Anchoring the audit log's root on chain, and reading the latest anchor back.

An anchor is the calldata of a zero-value transaction from the relayer to itself: (log key, size, root). Only
transactions *from the relayer* count, so nobody else can plant an anchor. The latest anchor of a log is found
by walking blocks back from the chain's head (a batch at a time) until one is found or ``lookback`` blocks were
read; anchors are hourly, so the walk is short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from eth_utils.address import to_checksum_address
from temporalio import activity
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.chain import ChainClient
from westworld.audit_anchor import AnchoredHead, LogHead, anchor_payload, parse_anchor

ANCHOR_LOOKBACK_BLOCKS = 50_000
BATCH = 25


def _hex(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return text if text.startswith("0x") else "0x" + text


async def find_latest_anchor(
    w3: AsyncWeb3[Any], sender: str, log_key: str, lookback: int = ANCHOR_LOOKBACK_BLOCKS
) -> AnchoredHead | None:
    """The newest anchor ``sender`` sent to itself for ``log_key``, within ``lookback`` blocks of the head."""
    me = to_checksum_address(sender)
    top = int(await w3.eth.block_number)
    bottom = max(top - lookback, 0)
    hi = top
    while hi >= bottom:
        numbers = range(hi, max(hi - BATCH, bottom - 1), -1)
        blocks = await asyncio.gather(*(w3.eth.get_block(n, full_transactions=True) for n in numbers))
        for block in blocks:  # newest first; in a block, the last transaction is the newest
            for tx in reversed(list(block["transactions"])):
                if not isinstance(tx, Mapping) or tx.get("from") != me or tx.get("to") != me:
                    continue
                parsed = parse_anchor(bytes(tx["input"]))
                if parsed is not None and parsed[2] == log_key:
                    return AnchoredHead(tree_size=parsed[0], root=parsed[1], log_key=log_key,
                                        tx_hash=_hex(tx["hash"]), block=int(block["number"]))
        hi -= BATCH
    return None


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
        return "0x" + bytes(tx_hash).hex()
