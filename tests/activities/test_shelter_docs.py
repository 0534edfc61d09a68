"""Documents against real js-ipfs and arlocal: encrypt, replicate with read-back, lose a replica and repair it,
refuse a tampered ciphertext, re-wrap data keys on a master-key rotation, and keep key material out of storage.
Sia is left unconfigured (no renterd runs here): its replica is recorded as not configured."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.shelter_docs import (
    ArweaveReplicator,
    IpfsReplicator,
    ShelterDocumentActivities,
    stage_document,
    staging_path,
)
from activities.shelter_keys import ShelterKeyActivities
from activities.sql.database import Database
from activities.sql.document_store import rewrap_all
from activities.storage.arweave import ArweaveClient
from activities.storage.ipfs import IpfsClient
from tests.activities.test_shelter_keys import make_guardians, open_share
from tests.fixtures.activity_env import InterceptedEnvironment
from westworld import envelope, shamir
from westworld.errors import DecryptFailed
from westworld.shelter import (
    CreateEpochInput,
    EncryptDocumentInput,
    KeyEpoch,
    Network,
    RepairInput,
    ReplicaState,
    ReplicateInput,
    open_document,
)

PLAINTEXT = b"Charter of the mesh, article 1: every node may leave. " * 2000


@dataclasses.dataclass
class Shelter:
    acts: ShelterDocumentActivities
    env: InterceptedEnvironment
    epoch: KeyEpoch
    privates: dict[str, bytes]
    data_dir: Path
    db_file: Path
    database: Database

    def master_key(self, epoch: KeyEpoch | None = None) -> bytes:
        """What a requester does with k shares (here: the first three guardians open theirs)."""
        e = epoch or self.epoch
        shares = [open_share(e, g.id, self.privates[g.id]) for g in e.guardians[:e.threshold]]
        shamir.check_shares(shares, e.commitments(), bytes.fromhex(e.salt))
        return shamir.combine(shares, threshold=e.threshold)


@pytest.fixture
async def shelter(tmp_path: Path, ipfs_client: IpfsClient, arweave_client: ArweaveClient) -> AsyncIterator[Shelter]:
    db_file = tmp_path / "westworld.db"
    database = Database(f"sqlite+aiosqlite:///{db_file}")
    await database.migrate()
    guardians, privates = make_guardians(5)
    env = InterceptedEnvironment()
    epoch = await env.run(ShelterKeyActivities(database).create_key_epoch, CreateEpochInput(guardians=guardians))
    acts = ShelterDocumentActivities(database, tmp_path / "data", {
        Network.IPFS: IpfsReplicator(ipfs_client), Network.ARWEAVE: ArweaveReplicator(arweave_client)})
    yield Shelter(acts, env, epoch, privates, tmp_path / "data", db_file, database)
    await database.close()


async def store(s: Shelter, document_id: str, plaintext: bytes = PLAINTEXT) -> str:
    stage_document(s.data_dir, document_id, plaintext)
    doc = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id=document_id, title="charter"))
    for network in Network:
        await s.env.run(s.acts.replicate_document, ReplicateInput(
            document_id=document_id, ciphertext_sha256=doc.ciphertext_sha256, network=network))
    return doc.ciphertext_sha256


async def test_store_replicates_verified_copies_and_only_k_shares_open_it(shelter: Shelter) -> None:
    s = shelter
    path = stage_document(s.data_dir, "charter", PLAINTEXT)
    assert path.stat().st_mode & 0o777 == 0o600
    digest = await store(s, "charter")
    assert not staging_path(s.data_dir, "charter").exists()
    record = await s.env.run(s.acts.get_document, "charter")
    states = {r.network: (r.ok, r.state) for r in record.replicas}
    assert states == {Network.IPFS: (True, ReplicaState.OK), Network.ARWEAVE: (True, ReplicaState.OK),
                      Network.SIA: (False, ReplicaState.NOT_CONFIGURED)}
    assert all(r.sha256 == digest for r in record.good_replicas())
    ipfs_ref = next(r for r in record.replicas if r.network == Network.IPFS)
    blob = await s.acts.replicators[Network.IPFS].get(ipfs_ref.locator)
    assert blob is not None and hashlib.sha256(blob).hexdigest() == digest and PLAINTEXT[:40] not in blob
    assert open_document(s.master_key(), record, blob) == PLAINTEXT
    # the guardians' shares below the threshold give another key, which does not open the document
    two = [open_share(s.epoch, g.id, s.privates[g.id]) for g in s.epoch.guardians[:2]]
    with pytest.raises(DecryptFailed):
        open_document(shamir.combine(two), record, blob)
    # a repeated replication (an activity retry) changes nothing
    again = await s.env.run(s.acts.replicate_document, ReplicateInput(
        document_id="charter", ciphertext_sha256=digest, network=Network.ARWEAVE))
    assert again.locator == next(r for r in record.replicas if r.network == Network.ARWEAVE).locator


async def test_a_lost_replica_is_found_and_repaired_from_another_network(shelter: Shelter,
                                                                        ipfs_client: IpfsClient) -> None:
    s = shelter
    digest = await store(s, "minutes-7", secrets.token_bytes(50_000))
    for cached in (s.data_dir / "shelter" / "cache").iterdir():
        cached.unlink()  # the repair must come from Arweave, not from this worker's cache
    cid = next(r for r in (await s.env.run(s.acts.get_document, "minutes-7")).replicas
               if r.network == Network.IPFS).locator
    await ipfs_client.pin_rm(cid)
    await ipfs_client.repo_gc()
    found = {r.network: r for r in await s.env.run(s.acts.verify_replicas, "minutes-7")}
    assert found[Network.IPFS].state == ReplicaState.MISSING and not found[Network.IPFS].ok
    assert found[Network.ARWEAVE].ok
    repaired = await s.env.run(s.acts.repair_replica, RepairInput(document_id="minutes-7", network=Network.IPFS))
    assert repaired.ok and repaired.locator == cid and repaired.detail.startswith("repaired from arweave:")
    assert all(r.ok for r in await s.env.run(s.acts.verify_replicas, "minutes-7") if r.network != Network.SIA)
    assert await ipfs_client.pinned(cid)
    back = await ipfs_client.cat(cid)
    assert back is not None and hashlib.sha256(back).hexdigest() == digest


async def test_a_tampered_ciphertext_is_refused_on_open(shelter: Shelter) -> None:
    s = shelter
    await store(s, "ledger", b"balance: 42")
    record = await s.env.run(s.acts.get_document, "ledger")
    blob = await s.acts.fetch_ciphertext("ledger")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptFailed, match="tampered with"):
        open_document(s.master_key(), record, flipped)
    # even with the index's hash matching (a tampered index too), AES-GCM refuses it
    forged = record.model_copy(update={"ciphertext_sha256": hashlib.sha256(flipped).hexdigest()})
    with pytest.raises(DecryptFailed, match="does not authenticate"):
        open_document(s.master_key(), forged, flipped)
    # another document's wrapped key does not open this one (the data key is bound to the document id)
    with pytest.raises(DecryptFailed):
        open_document(s.master_key(), forged.model_copy(update={"document_id": "other"}), flipped)


async def test_bad_store_inputs_are_refused_and_lose_nothing(shelter: Shelter) -> None:
    s = shelter
    with pytest.raises(ApplicationError, match=r"no staged plaintext for document ghost at .*staging/ghost"):
        await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="ghost"))
    await store(s, "dup", b"first")
    stage_document(s.data_dir, "dup", b"second")
    other = InterceptedEnvironment()
    other.info = dataclasses.replace(other.info, workflow_id="document:dup", workflow_run_id="another-run")
    with pytest.raises(ApplicationError, match=r"document dup is already stored .*left in place") as err:
        await other.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="dup"))
    assert err.value.non_retryable
    assert staging_path(s.data_dir, "dup").read_bytes() == b"second"
    with pytest.raises(ValueError, match="document_id"):
        stage_document(s.data_dir, "../etc/passwd", b"x")
    with pytest.raises(ApplicationError, match="not in the shelter index"):
        await s.env.run(s.acts.repair_replica, RepairInput(document_id="ghost", network=Network.IPFS))
    with pytest.raises(ApplicationError, match="no sia endpoint configured"):
        await s.env.run(s.acts.repair_replica, RepairInput(document_id="dup", network=Network.SIA))


async def test_a_retried_encrypt_of_the_same_run_returns_the_same_record(shelter: Shelter) -> None:
    s = shelter
    stage_document(s.data_dir, "retry", b"payload")
    first = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="retry"))
    stage_document(s.data_dir, "retry", b"payload")  # as if the worker died before deleting the staging file
    second = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="retry"))
    assert second == first and not staging_path(s.data_dir, "retry").exists()


async def test_master_key_rotation_rewraps_without_reuploading(shelter: Shelter) -> None:
    s = shelter
    await store(s, "a", b"alpha")
    await store(s, "b", b"beta")
    before = {d: (await s.env.run(s.acts.get_document, d)).replicas for d in ("a", "b")}
    new_epoch = await s.env.run(ShelterKeyActivities(s.database).create_key_epoch,
                                CreateEpochInput(guardians=s.epoch.guardians))
    with pytest.raises(DecryptFailed):
        await rewrap_all(s.database, 1, secrets.token_bytes(32), 2, bytes.fromhex(new_epoch.master_public_key))
    moved = await rewrap_all(s.database, 1, s.master_key(), 2, bytes.fromhex(new_epoch.master_public_key))
    assert moved == 2
    assert await rewrap_all(s.database, 1, s.master_key(), 2, bytes.fromhex(new_epoch.master_public_key)) == 0
    for doc_id, text in (("a", b"alpha"), ("b", b"beta")):
        record = await s.env.run(s.acts.get_document, doc_id)
        assert record.key_epoch == 2 and record.replicas == before[doc_id]
        blob = await s.acts.fetch_ciphertext(doc_id)
        assert open_document(s.master_key(new_epoch), record, blob) == text
        with pytest.raises(DecryptFailed):
            open_document(s.master_key(), record, blob)


async def test_no_key_material_or_plaintext_in_the_database_or_cache(shelter: Shelter) -> None:
    s = shelter
    secret_text = b"guardian meeting point: " + secrets.token_hex(16).encode()
    await store(s, "secret", secret_text)
    master = s.master_key()
    shares = [open_share(s.epoch, g.id, s.privates[g.id]) for g in s.epoch.guardians]
    record = await s.env.run(s.acts.get_document, "secret")
    data_key = envelope.open_sealed(master, record.wrapped_key, b"westworld/shelter/data-key/v1|document=secret")
    stored = s.db_file.read_bytes() + b"".join(
        p.read_bytes() for p in s.db_file.parent.glob("westworld.db*") if p != s.db_file)
    stored += b"".join(p.read_bytes() for p in (s.data_dir / "shelter").rglob("*") if p.is_file())
    for needle in (master, data_key, secret_text, *(sh.value for sh in shares)):
        assert needle not in stored and needle.hex().encode() not in stored


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def block_file(repo: Path, cid: str) -> Path:
    """Where js-ipfs keeps the block of a CIDv0: blocks/<next-to-last 2 chars>/<base32 multihash>.data."""
    n = 0
    for ch in cid:
        n = n * 58 + B58.index(ch)
    multihash = n.to_bytes(34, "big")
    key = base64.b32encode(multihash).decode().rstrip("=")
    return repo / "blocks" / key[-3:-1] / f"{key}.data"


async def test_a_corrupted_replica_is_named_and_rewritten(shelter: Shelter, ipfs_repo: Path,
                                                          ipfs_client: IpfsClient) -> None:
    """Bit rot on the IPFS node's disk: js-ipfs serves the rotten bytes; the read-back hash catches it, and the
    repair drops the rotten block and writes it again from the Arweave copy."""
    s = shelter
    digest = await store(s, "rotting", secrets.token_bytes(20_000))
    cid = next(r for r in (await s.env.run(s.acts.get_document, "rotting")).replicas
               if r.network == Network.IPFS).locator
    block = block_file(ipfs_repo, cid)
    rotten = bytearray(block.read_bytes())
    rotten[-100] ^= 0xFF
    block.write_bytes(bytes(rotten))
    found = {r.network: r for r in await s.env.run(s.acts.verify_replicas, "rotting")}
    assert found[Network.IPFS].state == ReplicaState.CORRUPTED
    assert f"expected {digest}" in found[Network.IPFS].detail
    repaired = await s.env.run(s.acts.repair_replica, RepairInput(document_id="rotting", network=Network.IPFS))
    assert repaired.ok and repaired.locator == cid
    back = await ipfs_client.cat(cid)
    assert back is not None and hashlib.sha256(back).hexdigest() == digest


async def test_a_network_the_document_was_not_stored_to_is_left_alone_by_the_audit(shelter: Shelter) -> None:
    """Stored on IPFS only (the owner's choice): Arweave, configured on this worker, is neither reported missing
    nor filled in (permanent storage the owner did not ask for); a repair asked there directly is refused."""
    s = shelter
    stage_document(s.data_dir, "late", b"stored on IPFS only")
    doc = await s.env.run(s.acts.encrypt_document, EncryptDocumentInput(document_id="late"))
    await s.env.run(s.acts.replicate_document, ReplicateInput(
        document_id="late", ciphertext_sha256=doc.ciphertext_sha256, network=Network.IPFS))
    found = {r.network: r for r in await s.env.run(s.acts.verify_replicas, "late")}
    assert set(found) == {Network.IPFS} and found[Network.IPFS].ok
    with pytest.raises(ApplicationError) as refused:
        await s.env.run(s.acts.repair_replica, RepairInput(document_id="late", network=Network.ARWEAVE))
    assert "was not stored to arweave (its networks: ipfs): not copied there" in str(refused.value)


async def test_store_before_any_key_epoch_says_to_init_the_guardians(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'westworld.db'}")
    await database.migrate()
    try:
        acts = ShelterDocumentActivities(database, tmp_path / "data", {})
        stage_document(tmp_path / "data", "notes", b"first sheltered document")
        with pytest.raises(ApplicationError, match="run `westworld shelter guardians init` first") as refused:
            await InterceptedEnvironment().run(acts.encrypt_document,
                                               EncryptDocumentInput(document_id="notes", title="notes"))
        assert refused.value.non_retryable
    finally:
        await database.close()
