"""The httpx IPFS client against a real js-ipfs daemon (kubo-compatible /api/v0)."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from activities.storage.ipfs import IpfsClient
from westworld.errors import IpfsError, IpfsUnavailable
from workers.stack.processes import free_port


async def test_add_cat_round_trip_is_content_addressed(ipfs_client: IpfsClient) -> None:
    assert await ipfs_client.version()
    data = secrets.token_bytes(300_000)  # more than one 256 KiB block
    cid = await ipfs_client.add(data)
    assert cid.startswith("Qm")  # CIDv0: the same string kubo gives
    assert await ipfs_client.add(data) == cid
    back = await ipfs_client.cat(cid)
    assert back is not None and hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert await ipfs_client.pinned(cid)


async def test_unpinned_and_collected_content_is_reported_missing(ipfs_client: IpfsClient) -> None:
    data = secrets.token_bytes(1000)
    cid = await ipfs_client.add(data)
    await ipfs_client.pin_rm(cid)
    await ipfs_client.pin_rm(cid)  # repeat: not an error
    assert not await ipfs_client.pinned(cid)
    await ipfs_client.repo_gc()
    assert await ipfs_client.cat(cid, timeout_s=2) is None


async def test_a_malformed_cid_is_an_error_naming_it(ipfs_client: IpfsClient) -> None:
    with pytest.raises(IpfsError, match="not-a-cid"):
        await ipfs_client.cat("not-a-cid")


async def test_a_daemon_that_is_not_there_is_transient() -> None:
    client = IpfsClient(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(IpfsUnavailable, match="did not answer add"):
            await client.add(b"x")
    finally:
        await client.aclose()
