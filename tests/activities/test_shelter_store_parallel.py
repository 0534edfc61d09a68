"""Storing a document the fast way keeps its guarantees (real js-ipfs and arlocal): a document larger than one
encryption piece, replicated to IPFS and Arweave at once, is verified on both and opens; a refused store leaves
no ciphertext behind; a cached copy that no longer hashes right is not used; a replica that reads back other bytes
than were put is never recorded as verified."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import stat

import pytest
from temporalio.exceptions import ApplicationError

from activities.shelter_docs import IpfsReplicator, stage_document, staging_path
from activities.storage.blob_cache import PIECE
from tests.activities.test_shelter_docs import Shelter, store
from tests.activities.test_shelter_docs import shelter as shelter  # noqa: PLC0414 - the fixture, re-exported
from tests.fixtures.activity_env import InterceptedEnvironment
from westworld.errors import REPLICA_NOT_VERIFIED
from westworld.shelter import EncryptDocumentInput, Network, ReplicaState, ReplicateInput, open_document


def cache_files(s: Shelter) -> set[str]:
    cache = s.data_dir / "shelter" / "cache"
    return {p.name for p in cache.iterdir()} if cache.exists() else set()


async def test_a_multi_piece_document_replicated_in_parallel_is_verified_everywhere_and_opens(shelter: Shelter) -> None:
    s = shelter
    plaintext = secrets.token_bytes(2 * PIECE + 12_345)
    stage_document(s.data_dir, "atlas", plaintext)
    doc = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="atlas"))
    assert (doc.plaintext_size, doc.size) == (len(plaintext), len(plaintext) + 4 + 12 + 16)
    assert cache_files(s) == {doc.ciphertext_sha256}  # no temporary file left, named by its hash
    cached = s.data_dir / "shelter" / "cache" / doc.ciphertext_sha256
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    refs = await asyncio.gather(*(s.env.run(s.acts.replicate_document, ReplicateInput(
        document_id="atlas", ciphertext_sha256=doc.ciphertext_sha256, network=net))
        for net in (Network.IPFS, Network.ARWEAVE)))
    assert [(r.network, r.ok, r.state) for r in refs] == [(Network.IPFS, True, ReplicaState.OK),
                                                          (Network.ARWEAVE, True, ReplicaState.OK)]
    record = await s.env.run(s.acts.get_document, "atlas")
    for ref in record.replicas:
        blob = await s.acts.replicators[ref.network].get(ref.locator)
        assert blob is not None and hashlib.sha256(blob).hexdigest() == doc.ciphertext_sha256
        assert open_document(s.master_key(), record, blob) == plaintext


async def test_a_refused_store_leaves_no_ciphertext_behind(shelter: Shelter) -> None:
    s = shelter
    await store(s, "taken", b"first")
    before = cache_files(s)
    stage_document(s.data_dir, "taken", b"second, by another run")
    other = InterceptedEnvironment()
    other.info = dataclasses.replace(other.info, workflow_id="document:taken", workflow_run_id="another-run")
    with pytest.raises(ApplicationError, match="already stored"):
        await other.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="taken"))
    assert cache_files(s) == before
    assert staging_path(s.data_dir, "taken").read_bytes() == b"second, by another run"


async def test_a_cached_copy_that_no_longer_hashes_right_is_not_replicated(shelter: Shelter) -> None:
    s = shelter
    stage_document(s.data_dir, "ledger", secrets.token_bytes(40_000))
    doc = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="ledger"))
    await s.env.run(s.acts.replicate_document, ReplicateInput(
        document_id="ledger", ciphertext_sha256=doc.ciphertext_sha256, network=Network.ARWEAVE))
    cached = s.data_dir / "shelter" / "cache" / doc.ciphertext_sha256
    rotten = bytearray(cached.read_bytes())
    rotten[100] ^= 1
    cached.write_bytes(bytes(rotten))
    ref = await s.env.run(s.acts.replicate_document, ReplicateInput(
        document_id="ledger", ciphertext_sha256=doc.ciphertext_sha256, network=Network.IPFS))
    assert ref.ok and ref.sha256 == doc.ciphertext_sha256  # copied from the verified Arweave replica instead
    back = await s.acts.replicators[Network.IPFS].get(ref.locator)
    assert back is not None and hashlib.sha256(back).hexdigest() == doc.ciphertext_sha256


class ServesOtherBytes(IpfsReplicator):
    """A real IPFS replica whose network then serves other bytes than it was given (bit rot, a lying node)."""

    async def get(self, locator: str) -> bytes | None:
        data = await super().get(locator)
        return None if data is None else data[:-1] + bytes([data[-1] ^ 1])

    async def sha256(self, locator: str) -> str | None:
        data = await self.get(locator)
        return None if data is None else hashlib.sha256(data).hexdigest()


async def test_a_replica_that_reads_back_other_bytes_is_never_recorded_verified(shelter: Shelter) -> None:
    s = shelter
    s.acts.replicators[Network.IPFS] = ServesOtherBytes(s.acts.replicators[Network.IPFS].client)  # type: ignore[attr-defined]
    stage_document(s.data_dir, "minutes", secrets.token_bytes(30_000))
    doc = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="minutes"))
    with pytest.raises(ApplicationError) as err:
        await s.env.run(s.acts.replicate_document, ReplicateInput(
            document_id="minutes", ciphertext_sha256=doc.ciphertext_sha256, network=Network.IPFS))
    assert err.value.type == REPLICA_NOT_VERIFIED and not err.value.non_retryable
    assert f"expected {doc.ciphertext_sha256}" in str(err.value)
    record = await s.env.run(s.acts.get_document, "minutes")
    assert not [r for r in record.replicas if r.network == Network.IPFS and r.ok]
