"""Anchoring the audit log's root on chain: the calldata of a zero-value transaction from the relayer."""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.chain import ChainClient
from westworld.audit_anchor import LogHead, anchor_payload


class AnchorActivities:
    def __init__(self, chain: ChainClient) -> None:
        self._chain = chain

    @activity.defn(name="anchor_root")
    async def anchor_root(self, head: LogHead) -> str:
        """Publish (tree size, root); idempotent per workflow run through the activity's own retries only."""
        w3, relayer = self._chain.w3, self._chain.relayer
        tx: dict[str, Any] = {
            "to": relayer.address, "value": 0, "data": anchor_payload(head.tree_size, head.root),
            "chainId": self._chain.dep.chain_id, "gas": 60_000,
            "nonce": await w3.eth.get_transaction_count(relayer.address, "pending"),
            "gasPrice": await w3.eth.gas_price,
        }
        tx_hash = await w3.eth.send_raw_transaction(relayer.sign_transaction(tx).raw_transaction)
        await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        return "0x" + bytes(tx_hash).hex()
