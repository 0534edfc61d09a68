"""Document activities: encrypt a staged document, replicate its ciphertext to IPFS / Arweave / Sia with a read-back
check, verify and repair replicas. The index lives in :mod:`activities.sql.document_store`, the storage networks behind
:mod:`activities.storage.replicators` (both re-exported here).

Plaintext never enters workflow history: the CLI stages it at ``<data dir>/shelter/staging/<document_id>``
(mode 0600) and :meth:`ShelterDocumentActivities.encrypt_document` reads and deletes it. The data key is drawn
from ``secrets`` there, wraps itself to the key epoch's master *public* key and is dropped: storing a document
never needs the master private key. Ciphertexts are cached content-addressed at ``<data dir>/shelter/cache``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from temporalio import activity

from activities.sql.database import Database
from activities.sql.document_store import DocumentStore, rewrap_all, utcnow
from activities.sql.key_epoch_store import KeyEpochStore
from activities.storage.blob_cache import BlobCache, Encrypted, sized
from activities.storage.replicators import (
    TRANSIENT,
    ArweaveReplicator,
    IpfsReplicator,
    Replicator,
    SiaReplicator,
)
from westworld import envelope
from westworld.errors import (
    NO_GOOD_COPY,
    REPLICA_NOT_VERIFIED,
    InvalidInput,
    PermanentError,
    TransientError,
    WestworldError,
)
from westworld.shelter import (
    DocumentRecord,
    EncryptDocumentInput,
    EncryptedDocument,
    Network,
    RepairInput,
    ReplicaRef,
    ReplicaState,
    ReplicateInput,
    content_aad,
    data_key_aad,
)

__all__ = [
    "TRANSIENT", "ArweaveReplicator", "DocumentStore", "IpfsReplicator", "Replicator",
    "ShelterDocumentActivities", "SiaReplicator", "rewrap_all", "stage_document", "staging_path",
]

def staging_path(data_dir: Path, document_id: str) -> Path:
    return data_dir / "shelter" / "staging" / document_id


def stage_document(data_dir: Path, document_id: str, plaintext: bytes) -> Path:
    """Write a plaintext where ``encrypt_document`` will find it (mode 0600; the CLI's half of a store)."""
    EncryptDocumentInput(document_id=document_id)  # refuse an id that is not a safe file name
    path = staging_path(data_dir, document_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(plaintext)
    return path


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _settle(encrypting: asyncio.Future[Encrypted] | None) -> Encrypted | None:
    """The encrypted blob, or None if there was no staged plaintext (or it vanished before it was read)."""
    if encrypting is None:
        return None
    try:
        return await encrypting
    except FileNotFoundError:
        return None


async def _discard(encrypting: asyncio.Future[Encrypted] | None) -> None:
    """Wait for an encryption that is no longer wanted and drop its file."""
    if encrypting is None:
        return
    with contextlib.suppress(Exception):  # its own failure (the staged file vanished) leaves no file behind
        BlobCache.drop(await asyncio.shield(encrypting))


class ShelterDocumentActivities:
    """Built with the database, the data dir (staging + cache) and one replicator per configured network."""

    def __init__(self, database: Database, data_dir: Path, replicators: Mapping[Network, Replicator]) -> None:
        self.store = DocumentStore(database)
        self.epochs = KeyEpochStore(database)
        self.data_dir = data_dir
        self.cache = BlobCache(data_dir / "shelter" / "cache")
        self.replicators = dict(replicators)

    @activity.defn(name="encrypt_document")
    async def encrypt_document(self, inp: EncryptDocumentInput) -> EncryptedDocument:
        """Encrypt the staged plaintext under a fresh data key, wrap the key to the current epoch, index the
        document, cache the ciphertext and delete the staging file. Returns public data only."""
        info = activity.info()
        me = f"{info.workflow_id}/{info.workflow_run_id}"
        staged = staging_path(self.data_dir, inp.document_id)
        data_key = secrets.token_bytes(32)
        # The plaintext is encrypted into the cache (in pieces, in a thread) while the current key epoch is read;
        # the index insert then says whether the id was free (a repeat or a taken id is told apart only then).
        encrypting = (asyncio.ensure_future(sized(
            staged.stat().st_size, self.cache.encrypt_into, staged, data_key, secrets.token_bytes(12),
            content_aad(inp.document_id))) if staged.exists() else None)
        try:
            epoch = await self.epochs.current()
        except BaseException:
            await _discard(encrypting)
            raise
        blob = await _settle(encrypting)
        if blob is None or epoch is None:
            if blob is not None:
                BlobCache.drop(blob)
            return await self._refuse_or_resume(inp, me, staged, staged=blob is not None)
        wrapped = envelope.seal(bytes.fromhex(epoch.master_public_key), data_key, data_key_aad(inp.document_id),
                                secrets.token_bytes(32), secrets.token_bytes(12))
        del data_key
        doc = EncryptedDocument(document_id=inp.document_id, title=inp.title, key_epoch=epoch.epoch,
                                wrapped_key=wrapped, ciphertext_sha256=blob.sha256, size=blob.size,
                                plaintext_size=blob.plaintext_size)
        self.cache.keep(blob)  # before the index row: a row must never name a ciphertext no one has
        if not await self.store.insert(doc, me):  # the id is taken: by this run's earlier attempt, or another's
            self.cache.remove(blob.sha256)  # this attempt's ciphertext (its key is gone) is of no use
            return await self._refuse_or_resume(inp, me, staged, staged=True, taken=True)
        staged.unlink(missing_ok=True)
        return doc

    async def _refuse_or_resume(self, inp: EncryptDocumentInput, me: str, path: Path, *, staged: bool,
                                taken: bool = False) -> EncryptedDocument:
        """The store cannot go on as new: finish this run's own earlier attempt, or refuse with what is missing."""
        owner = await self.store.created_by(inp.document_id)
        if owner is not None:
            record = await self.store.get(inp.document_id)
            assert record is not None
            if owner == me:  # this run's own earlier attempt got this far: finish it
                path.unlink(missing_ok=True)
                return EncryptedDocument.model_validate(record.model_dump(exclude={"replicas", "created_at"}))
            raise InvalidInput(f"document {inp.document_id} is already stored (by {owner}); choose another document "
                               f"id. The staged plaintext at {path} was left in place.")
        if taken:  # its row went between the insert and the look-up
            raise InvalidInput(f"document {inp.document_id} is already stored; choose another document id")
        if not staged:
            raise InvalidInput(f"no staged plaintext for document {inp.document_id} at {path}: "
                               "`westworld shelter store` writes it there before starting the workflow")
        raise InvalidInput("no active shelter key epoch: run `westworld shelter guardians init` first "
                           "(after each guardian made a key with `westworld shelter keygen`)")

    async def _source(self, document_id: str, digest: str, skip: Network | None) -> tuple[bytes, str] | None:
        """A good copy of the ciphertext: the local cache if it still hashes right (no network or index round
        trip), else another network's replica read back and hashed."""
        size = self.cache.size(digest)
        cached = await sized(size, self.cache.read, digest) if size is not None else None
        if cached is not None:
            return cached, "local cache"
        record = await self.store.get(document_id)
        for ref in record.replicas if record else []:
            replicator = self.replicators.get(ref.network)
            if ref.network == skip or replicator is None or not ref.locator:
                continue
            try:
                data = await replicator.get(ref.locator)
            except (*TRANSIENT, WestworldError):
                continue
            if data is not None and await sized(len(data), _sha256_hex, data) == digest:
                return data, f"{ref.network.value}:{ref.locator}"
        return None

    async def _replicate(self, document_id: str, digest: str, network: Network, data: bytes) -> ReplicaRef:
        replicator = self.replicators[network]
        try:
            locator = await replicator.put(data, digest, document_id)
        except PermanentError as err:  # a network that does not answer raises a TransientError: retried
            raise InvalidInput(f"{network.value} refused document {document_id}: {err.message}") from err
        back = await replicator.sha256(locator)  # the read-back: every byte the network serves, hashed
        if back != digest:  # read-back failed: retry the activity (the put is idempotent)
            raise TransientError(f"{network.value} replica {locator} of {document_id} read back "
                                 f"{'nothing' if back is None else 'SHA-256 ' + back}, expected {digest}",
                                 type=REPLICA_NOT_VERIFIED)
        got = back
        ref = ReplicaRef(network=network, locator=locator, sha256=got, verified_at=utcnow(), ok=True)
        await self.store.upsert_replica(document_id, ref)
        return ref

    @activity.defn(name="replicate_document")
    async def replicate_document(self, inp: ReplicateInput) -> ReplicaRef:
        """Put the ciphertext on one network and verify it by reading it back and hashing (idempotent)."""
        if inp.network not in self.replicators:
            ref = ReplicaRef(network=inp.network, locator="", sha256="", ok=False,
                             state=ReplicaState.NOT_CONFIGURED,
                             detail=f"no {inp.network.value} endpoint configured on this worker")
            await self.store.upsert_replica(inp.document_id, ref)
            return ref
        source = await self._source(inp.document_id, inp.ciphertext_sha256, skip=inp.network)
        if source is None:
            raise PermanentError(f"no good copy of document {inp.document_id} ({inp.ciphertext_sha256}) to replicate "
                                 "from", type=NO_GOOD_COPY)
        return await self._replicate(inp.document_id, inp.ciphertext_sha256, inp.network, source[0])

    async def _check(self, digest: str, ref: ReplicaRef) -> ReplicaRef:
        replicator = self.replicators.get(ref.network)
        if replicator is None or not ref.locator:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.NOT_CONFIGURED,
                                          "detail": f"no {ref.network.value} endpoint configured"})
        now = utcnow()
        try:
            got = await replicator.sha256(ref.locator)
        except (*TRANSIENT, WestworldError) as err:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.UNREACHABLE, "verified_at": now,
                                          "detail": str(err)[:500]})
        if got is None:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.MISSING, "verified_at": now,
                                          "detail": f"{ref.network.value} no longer has {ref.locator}"})
        if got != digest:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.CORRUPTED, "verified_at": now,
                                          "sha256": got, "detail": f"read back SHA-256 {got}, expected {digest}"})
        return ref.model_copy(update={"ok": True, "state": ReplicaState.OK, "verified_at": now, "sha256": got,
                                      "detail": ""})

    @activity.defn(name="verify_replicas")
    async def verify_replicas(self, document_id: str) -> list[ReplicaRef]:
        """Read every replica of a document back, hash it, and record what was found. Only the networks the
        document was stored to are checked (the store records one row per network asked for, reached or not): a
        network the worker has but the owner did not choose is never reported missing, so never "repaired" onto
        (a document kept off Arweave's permanent storage stays off it)."""
        record = await self.store.get(document_id)
        if record is None:
            raise InvalidInput(f"document {document_id} is not in the shelter index")
        checked = []
        for ref in record.replicas:
            if ref.state == ReplicaState.NOT_CONFIGURED and ref.network not in self.replicators:
                checked.append(ref)
                continue
            new = await self._check(record.ciphertext_sha256, ref) if ref.locator else ref.model_copy(update={
                "ok": False, "state": ReplicaState.MISSING, "verified_at": utcnow(),
                "detail": f"never stored on {ref.network.value} ({ref.detail or ref.state.value} before)"})
            await self.store.upsert_replica(document_id, new)
            checked.append(new)
        return checked

    @activity.defn(name="repair_replica")
    async def repair_replica(self, inp: RepairInput) -> ReplicaRef:
        """Re-create a lost or corrupted replica from a good copy (another network, else the local cache)."""
        record = await self.store.get(inp.document_id)
        if record is None:
            raise InvalidInput(f"document {inp.document_id} is not in the shelter index")
        if inp.network not in {r.network for r in record.replicas}:
            raise InvalidInput(f"document {inp.document_id} was not stored to {inp.network.value} "
                               f"(its networks: {', '.join(r.network.value for r in record.replicas) or 'none'}): "
                               "not copied there")
        if inp.network not in self.replicators:
            raise InvalidInput(f"cannot repair the {inp.network.value} replica of {inp.document_id}: "
                               f"no {inp.network.value} endpoint configured")
        source = await self._source(inp.document_id, record.ciphertext_sha256, skip=inp.network)
        if source is None:
            raise PermanentError(f"no good copy of document {inp.document_id} is left on any network or in the "
                                 "cache", type=NO_GOOD_COPY)
        current = next((r for r in record.replicas if r.network == inp.network and r.locator), None)
        if current is not None and (await self._check(record.ciphertext_sha256, current)).state \
                == ReplicaState.CORRUPTED:
            await self.replicators[inp.network].discard(current.locator)
        ref = await self._replicate(inp.document_id, record.ciphertext_sha256, inp.network, source[0])
        repaired = ref.model_copy(update={"detail": f"repaired from {source[1]}"})
        await self.store.upsert_replica(inp.document_id, repaired)
        return repaired

    @activity.defn(name="list_documents")
    async def list_documents(self) -> list[str]:
        return await self.store.ids()

    @activity.defn(name="get_document")
    async def get_document(self, document_id: str) -> DocumentRecord:
        record = await self.store.get(document_id)
        if record is None:
            raise InvalidInput(f"document {document_id} is not in the shelter index")
        return record

    async def fetch_ciphertext(self, document_id: str) -> bytes:
        """A verified ciphertext of the document (for `westworld shelter open`); not an activity."""
        record = await self.store.get(document_id)
        if record is None:
            raise InvalidInput(f"document {document_id} is not in the shelter index")
        source = await self._source(document_id, record.ciphertext_sha256, skip=None)
        if source is None:
            raise PermanentError(f"no good copy of document {document_id} is left", type=NO_GOOD_COPY)
        return source[0]

