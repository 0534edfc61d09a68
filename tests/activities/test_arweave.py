"""Arweave format-2 transactions signed here (RSA-PSS, deep hash, data root) against a real arlocal."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from activities.storage.arweave import ArweaveClient, Wallet, b64url, build_transaction, data_root, deep_hash


@pytest.mark.parametrize(("size", "root"), [
    # computed by arweave-js's own `computeRootHash` (node_modules/arweave/node/lib/merkle.js) on bytes i % 256
    (13, "f948aa181078014505c6aa87e50f94a309dd3f297cb0ff339dac7bbb15623ddf"),
    (262144, "14a746f0c8732117cd313941ede52694abbd370a413ab11d523c9369242b57c4"),
    (270000, "c273393ae9a6d51e4e608b8eb44797f60266e2f5c56ac6d7270c966de832545d"),
    (600000, "df280d18be22259871fb44d5fccfb6ccb964a0a2ae37b5739e152aab77ae3b4e"),
    (1000000, "93e6ff258f689dc0c966fceb24161ff337ce428844e72a0e2edf96c91d0c26d0"),
])
def test_data_root_matches_arweave_js(size: int, root: str) -> None:
    assert data_root(bytes(i % 256 for i in range(size))).hex() == root


def test_deep_hash_distinguishes_blob_and_list() -> None:
    assert deep_hash(b"ab") != deep_hash([b"ab"]) != deep_hash([b"a", b"b"])


async def test_post_mine_and_read_back(arweave_client: ArweaveClient) -> None:
    data = secrets.token_bytes(70_000)
    digest = hashlib.sha256(data).hexdigest()
    tx_id = await arweave_client.post(data, {"Westworld-SHA256": digest})
    assert await arweave_client.data(tx_id) == data
    assert await arweave_client.find_by_tag("Westworld-SHA256", digest) == tx_id
    assert await arweave_client.find_by_tag("Westworld-SHA256", "0" * 64) is None
    assert await arweave_client.data(b64url(secrets.token_bytes(32))) is None


async def test_a_forged_signature_is_refused(arweave_client: ArweaveClient, arlocal_url: str) -> None:
    """arlocal verifies the RSA-PSS signature: a transaction whose data was swapped after signing is refused."""
    anchor = (await arweave_client._get("/tx_anchor")).text
    tx = build_transaction(arweave_client.wallet, b"signed bytes", {}, anchor, 1000)
    forged = build_transaction(Wallet(arweave_client.wallet.key), b"other bytes", {}, anchor, 1000)
    tx["data"], tx["data_root"], tx["data_size"] = forged["data"], forged["data_root"], forged["data_size"]
    resp = await arweave_client._http.post(f"{arlocal_url}/tx", json=tx)
    assert resp.status_code >= 400, resp.text


def test_wallet_survives_a_jwk_round_trip(arweave_wallet: Wallet) -> None:
    again = Wallet.from_jwk(arweave_wallet.to_jwk())
    assert again.address == arweave_wallet.address and len(again.owner) == 512
