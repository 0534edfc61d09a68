"""Read-back digests, streamed (real js-ipfs and arlocal): the SHA-256 a network's replica hashes to, over every
byte it serves, equals the hash of the bytes themselves; content the network lost or never had is None; a
malformed locator or an absent daemon is the same typed error as a whole read. Sia's runs only against a real
renterd (see test_sia)."""

from __future__ import annotations

import hashlib
import os
import secrets

import pytest

from activities.storage.arweave import ArweaveClient, b64url
from activities.storage.ipfs import IpfsClient
from activities.storage.replicators import ArweaveReplicator, IpfsReplicator
from activities.storage.sia import SiaClient
from tests.activities.test_sia import NO_RENTERD
from westworld.errors import ArweaveUnavailable, IpfsError, IpfsUnavailable, SiaUnavailable
from workers.stack.processes import free_port


async def test_ipfs_digest_of_a_multi_block_file_and_of_a_lost_one(ipfs_client: IpfsClient) -> None:
    data = secrets.token_bytes(700_000)  # three 256 KiB blocks
    cid = await IpfsReplicator(ipfs_client).put(data, hashlib.sha256(data).hexdigest(), "doc")
    assert await IpfsReplicator(ipfs_client).sha256(cid) == hashlib.sha256(data).hexdigest()
    await ipfs_client.pin_rm(cid)
    await ipfs_client.repo_gc()
    assert await ipfs_client.cat_sha256(cid, timeout_s=2) is None
    with pytest.raises(IpfsError, match="not-a-cid"):
        await ipfs_client.cat_sha256("not-a-cid")
    gone = IpfsClient(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(IpfsUnavailable, match="did not answer cat"):
            await gone.cat_sha256(cid)
    finally:
        await gone.aclose()


async def test_arweave_digest_and_an_idempotent_repeat_that_reads_nothing_whole(
        arweave_client: ArweaveClient) -> None:
    data = secrets.token_bytes(90_000)
    digest = hashlib.sha256(data).hexdigest()
    replicator = ArweaveReplicator(arweave_client)
    tx_id = await replicator.put(data, digest, "doc")
    assert await replicator.sha256(tx_id) == digest
    assert await replicator.put(data, digest, "doc") == tx_id  # found by its tag, checked by its digest
    assert await arweave_client.data_sha256(b64url(secrets.token_bytes(32))) is None
    gone = ArweaveClient(f"http://127.0.0.1:{free_port()}", arweave_client.wallet)
    try:
        with pytest.raises(ArweaveUnavailable, match="did not answer"):
            await gone.data_sha256(tx_id)
    finally:
        await gone.aclose()


async def test_a_post_with_a_fee_for_another_size_asks_again(arweave_client: ArweaveClient) -> None:
    prepared = await arweave_client.prepare(10)
    data = secrets.token_bytes(50_000)
    tx_id = await arweave_client.post(data, {"Westworld-Test": "stale-fee"}, prepared)
    assert await arweave_client.data(tx_id) == data


SIA_URL = os.environ.get("WESTWORLD_TEST_SIA_URL", "")


@pytest.mark.skipif(not SIA_URL, reason=NO_RENTERD)
async def test_sia_digest_against_a_real_renterd() -> None:
    client = SiaClient(SIA_URL, os.environ.get("WESTWORLD_TEST_SIA_PASSWORD", ""))
    try:
        data = secrets.token_bytes(4096)
        key = await client.put(f"westworld/test/{secrets.token_hex(8)}", data)
        assert await client.get_sha256(key) == hashlib.sha256(data).hexdigest()
        await client.delete(key)
        assert await client.get_sha256(key) is None
    finally:
        await client.aclose()


async def test_an_absent_renterd_is_transient_for_a_digest_too() -> None:
    client = SiaClient(f"http://127.0.0.1:{free_port()}", "pw")
    try:
        with pytest.raises(SiaUnavailable, match="did not answer GET westworld/x"):
            await client.get_sha256("westworld/x")
    finally:
        await client.aclose()
