"""Document activities: encrypt a staged document, replicate its ciphertext to IPFS / Arweave / Sia with a read-back
check, verify and repair replicas; tables ``shelter_documents`` and ``shelter_replicas`` (public data only).

Plaintext never enters workflow history: the CLI stages it at ``<data dir>/shelter/staging/<document_id>``
(mode 0600) and :meth:`ShelterDocumentActivities.encrypt_document` reads and deletes it. The data key is drawn
from ``secrets`` there, wraps itself to the key epoch's master *public* key and is dropped: storing a document
never needs the master private key. Ciphertexts are cached content-addressed at ``<data dir>/shelter/cache``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.arweave import ArweaveClient, ArweaveUnavailable
from activities.ipfs import IpfsClient, IpfsUnavailable
from activities.shelter_keys import KeyEpochStore, create_tables
from activities.sia import SiaClient, SiaUnavailable
from activities.store import Database
from westworld import envelope
from westworld.errors import INVALID_INPUT, WestworldError
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

NO_GOOD_COPY = "NoGoodCopy"
TRANSIENT = (IpfsUnavailable, ArweaveUnavailable, SiaUnavailable)

metadata = sa.MetaData()

documents = sa.Table(
    "shelter_documents", metadata,
    sa.Column("document_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(256), nullable=False),
    sa.Column("key_epoch", sa.Integer, nullable=False),
    sa.Column("wrapped_key", sa.Text, nullable=False),  # JSON Sealed: the data key sealed to the master public key
    sa.Column("ciphertext_sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("plaintext_size", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),  # workflow id + run: a retried encrypt is recognised
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

replicas = sa.Table(
    "shelter_replicas", metadata,
    sa.Column("document_id", sa.String(64), sa.ForeignKey("shelter_documents.document_id"), primary_key=True),
    sa.Column("network", sa.String(16), primary_key=True),
    sa.Column("locator", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("verified_at", sa.DateTime(timezone=True)),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(at: datetime | None) -> datetime | None:
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=UTC)


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


class Replicator(Protocol):
    """One storage network: put bytes (idempotently, by content hash), get them back (None: the network lost them)."""

    async def put(self, data: bytes, sha256: str, document_id: str) -> str: ...

    async def get(self, locator: str) -> bytes | None: ...

    async def discard(self, locator: str) -> None:
        """Drop a corrupted copy so a re-put writes fresh bytes (a no-op where a put overwrites)."""


class IpfsReplicator:
    def __init__(self, client: IpfsClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        return await self.client.add(data, pin=True)  # content addressed: a repeat returns the same CID

    async def get(self, locator: str) -> bytes | None:
        return await self.client.cat(locator)

    async def discard(self, locator: str) -> None:
        # The blockstore keeps a block it already "has", even if its bytes rotted on disk: unpin and collect
        # so the next add writes the blocks again.
        await self.client.pin_rm(locator)
        await self.client.repo_gc()


class ArweaveReplicator:
    TAG = "Westworld-SHA256"

    def __init__(self, client: ArweaveClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        existing = await self.client.find_by_tag(self.TAG, sha256)  # a retried post must not pay twice
        if existing is not None and await self.client.data(existing) == data:
            return existing
        return await self.client.post(data, {"Content-Type": "application/octet-stream", self.TAG: sha256,
                                             "Westworld-Document": document_id})

    async def get(self, locator: str) -> bytes | None:
        return await self.client.data(locator)

    async def discard(self, locator: str) -> None:
        pass  # permanent storage: a repair posts a new transaction (found again by its content-hash tag)


class SiaReplicator:
    def __init__(self, client: SiaClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        return await self.client.put(f"westworld/shelter/{sha256}", data)

    async def get(self, locator: str) -> bytes | None:
        return await self.client.get(locator)

    async def discard(self, locator: str) -> None:
        pass  # a PUT of the same key overwrites the object


class DocumentStore:
    """The ``shelter_documents`` and ``shelter_replicas`` tables."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._ready = False
        self._lock = asyncio.Lock()

    async def init(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await KeyEpochStore(self._db).init()
                await create_tables(self._db, metadata)
                self._ready = True

    async def insert(self, doc: EncryptedDocument, created_by: str) -> None:
        await self.init()
        async with self._db.engine.begin() as conn:
            await conn.execute(documents.insert().values(
                document_id=doc.document_id, title=doc.title, key_epoch=doc.key_epoch,
                wrapped_key=doc.wrapped_key.model_dump_json(), ciphertext_sha256=doc.ciphertext_sha256,
                size=doc.size, plaintext_size=doc.plaintext_size, created_by=created_by, created_at=_utcnow(),
            ))

    async def created_by(self, document_id: str) -> str | None:
        await self.init()
        async with self._db.engine.connect() as conn:
            return (await conn.execute(sa.select(documents.c.created_by)
                                       .where(documents.c.document_id == document_id))).scalar()

    async def get(self, document_id: str) -> DocumentRecord | None:
        await self.init()
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(documents).where(documents.c.document_id == document_id))).first()
            if row is None:
                return None
            reps = (await conn.execute(sa.select(replicas).where(replicas.c.document_id == document_id)
                                       .order_by(replicas.c.network))).all()
        m = row._mapping
        return DocumentRecord(
            document_id=m["document_id"], title=m["title"], key_epoch=m["key_epoch"],
            wrapped_key=envelope.Sealed.model_validate_json(m["wrapped_key"]),
            ciphertext_sha256=m["ciphertext_sha256"], size=m["size"], plaintext_size=m["plaintext_size"],
            created_at=_aware(m["created_at"]),
            replicas=[ReplicaRef(network=Network(r.network), locator=r.locator, sha256=r.sha256,
                                 verified_at=_aware(r.verified_at), ok=r.ok, state=ReplicaState(r.state),
                                 detail=r.detail) for r in reps],
        )

    async def ids(self) -> list[str]:
        await self.init()
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(sa.select(documents.c.document_id)
                                            .order_by(documents.c.document_id))).scalars())

    async def ids_in_epoch(self, epoch: int) -> list[str]:
        await self.init()
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(sa.select(documents.c.document_id)
                                            .where(documents.c.key_epoch == epoch))).scalars())

    async def upsert_replica(self, document_id: str, ref: ReplicaRef) -> None:
        await self.init()
        values = {"locator": ref.locator, "sha256": ref.sha256, "verified_at": ref.verified_at, "ok": ref.ok,
                  "state": ref.state.value, "detail": ref.detail}
        async with self._db.engine.begin() as conn:
            updated = await conn.execute(replicas.update().where(
                (replicas.c.document_id == document_id) & (replicas.c.network == ref.network.value)).values(**values))
            if not updated.rowcount:
                await conn.execute(replicas.insert().values(document_id=document_id, network=ref.network.value,
                                                            **values))

    async def rewrap(self, document_id: str, old_epoch: int, new_epoch: int, sealed: envelope.Sealed) -> bool:
        """Swap one wrapped key, only if it is still under ``old_epoch`` (so a repeat changes nothing)."""
        async with self._db.engine.begin() as conn:
            res = await conn.execute(documents.update().where(
                (documents.c.document_id == document_id) & (documents.c.key_epoch == old_epoch))
                .values(key_epoch=new_epoch, wrapped_key=sealed.model_dump_json()))
        return bool(res.rowcount)


async def rewrap_all(database: Database, old_epoch: int, old_private: bytes, new_epoch: int,
                     new_public: bytes) -> int:
    """Re-wrap every data key of ``old_epoch`` to ``new_public`` (a master-key rotation; documents stay where they
    are). Call it inside the one activity that holds the reconstructed old key. Returns how many were re-wrapped;
    repeatable: documents already moved are skipped.

    Raises:
        DecryptFailed: ``old_private`` is not ``old_epoch``'s master key (nothing is changed for that document).
    """
    store = DocumentStore(database)
    moved = 0
    for document_id in await store.ids_in_epoch(old_epoch):
        record = await store.get(document_id)
        if record is None or record.key_epoch != old_epoch:
            continue
        aad = data_key_aad(document_id)
        data_key = envelope.open_sealed(old_private, record.wrapped_key, aad)
        sealed = envelope.seal(new_public, data_key, aad, secrets.token_bytes(32), secrets.token_bytes(12))
        del data_key
        moved += await store.rewrap(document_id, old_epoch, new_epoch, sealed)
    return moved


def _fail(message: str, type_: str = INVALID_INPUT) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


class ShelterDocumentActivities:
    """Built with the database, the data dir (staging + cache) and one replicator per configured network."""

    def __init__(self, database: Database, data_dir: Path, replicators: Mapping[Network, Replicator]) -> None:
        self.store = DocumentStore(database)
        self.epochs = KeyEpochStore(database)
        self.data_dir = data_dir
        self.cache_dir = data_dir / "shelter" / "cache"
        self.replicators = dict(replicators)

    def _cache_write(self, blob: bytes, digest: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{digest}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(self.cache_dir / digest)

    def _cache_read(self, digest: str) -> bytes | None:
        path = self.cache_dir / digest
        if not path.exists():
            return None
        blob = path.read_bytes()
        return blob if hashlib.sha256(blob).hexdigest() == digest else None

    @activity.defn(name="encrypt_document")
    async def encrypt_document(self, inp: EncryptDocumentInput) -> EncryptedDocument:
        """Encrypt the staged plaintext under a fresh data key, wrap the key to the current epoch, index the
        document, cache the ciphertext and delete the staging file. Returns public data only."""
        info = activity.info()
        me = f"{info.workflow_id}/{info.workflow_run_id}"
        staged = staging_path(self.data_dir, inp.document_id)
        owner = await self.store.created_by(inp.document_id)
        if owner is not None:
            record = await self.store.get(inp.document_id)
            assert record is not None
            if owner == me:  # this run's own earlier attempt got this far: finish it
                staged.unlink(missing_ok=True)
                return EncryptedDocument.model_validate(record.model_dump(exclude={"replicas", "created_at"}))
            raise _fail(f"document {inp.document_id} is already stored (by {owner}); choose another document id. "
                        f"The staged plaintext at {staged} was left in place.")
        if not staged.exists():
            raise _fail(f"no staged plaintext for document {inp.document_id} at {staged}: "
                        "`westworld shelter store` writes it there before starting the workflow")
        epoch = await self.epochs.current()
        if epoch is None:
            raise _fail("no active shelter key epoch: run `westworld shelter keygen` first")
        plaintext = staged.read_bytes()
        data_key = secrets.token_bytes(32)
        blob = envelope.encrypt_blob(data_key, secrets.token_bytes(12), plaintext, content_aad(inp.document_id))
        wrapped = envelope.seal(bytes.fromhex(epoch.master_public_key), data_key, data_key_aad(inp.document_id),
                                secrets.token_bytes(32), secrets.token_bytes(12))
        del data_key
        digest = hashlib.sha256(blob).hexdigest()
        doc = EncryptedDocument(document_id=inp.document_id, title=inp.title, key_epoch=epoch.epoch,
                                wrapped_key=wrapped, ciphertext_sha256=digest, size=len(blob),
                                plaintext_size=len(plaintext))
        del plaintext
        self._cache_write(blob, digest)
        try:
            await self.store.insert(doc, me)
        except IntegrityError as err:  # a concurrent store of the same id won the race
            raise _fail(f"document {inp.document_id} is already stored; choose another document id") from err
        staged.unlink(missing_ok=True)
        return doc

    async def _source(self, document_id: str, digest: str, skip: Network | None) -> tuple[bytes, str] | None:
        """A good copy of the ciphertext: another network's replica read back and hashed, else the local cache."""
        record = await self.store.get(document_id)
        for ref in record.replicas if record else []:
            replicator = self.replicators.get(ref.network)
            if ref.network == skip or replicator is None or not ref.locator:
                continue
            try:
                data = await replicator.get(ref.locator)
            except (*TRANSIENT, WestworldError):
                continue
            if data is not None and hashlib.sha256(data).hexdigest() == digest:
                return data, f"{ref.network.value}:{ref.locator}"
        cached = self._cache_read(digest)
        return (cached, "local cache") if cached is not None else None

    async def _replicate(self, document_id: str, digest: str, network: Network, data: bytes) -> ReplicaRef:
        replicator = self.replicators[network]
        try:
            locator = await replicator.put(data, digest, document_id)
        except WestworldError as err:
            raise _fail(f"{network.value} refused document {document_id}: {err.message}") from err
        back = await replicator.get(locator)
        got = hashlib.sha256(back).hexdigest() if back is not None else ""
        if got != digest:  # read-back failed: retry the activity (the put is idempotent)
            raise ApplicationError(f"{network.value} replica {locator} of {document_id} read back "
                                   f"{'nothing' if back is None else 'SHA-256 ' + got}, expected {digest}",
                                   type="ReplicaNotVerified")
        ref = ReplicaRef(network=network, locator=locator, sha256=got, verified_at=_utcnow(), ok=True)
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
            raise _fail(f"no good copy of document {inp.document_id} ({inp.ciphertext_sha256}) to replicate from",
                        NO_GOOD_COPY)
        return await self._replicate(inp.document_id, inp.ciphertext_sha256, inp.network, source[0])

    async def _check(self, digest: str, ref: ReplicaRef) -> ReplicaRef:
        replicator = self.replicators.get(ref.network)
        if replicator is None or not ref.locator:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.NOT_CONFIGURED,
                                          "detail": f"no {ref.network.value} endpoint configured"})
        now = _utcnow()
        try:
            data = await replicator.get(ref.locator)
        except (*TRANSIENT, WestworldError) as err:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.UNREACHABLE, "verified_at": now,
                                          "detail": str(err)[:500]})
        if data is None:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.MISSING, "verified_at": now,
                                          "detail": f"{ref.network.value} no longer has {ref.locator}"})
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            return ref.model_copy(update={"ok": False, "state": ReplicaState.CORRUPTED, "verified_at": now,
                                          "sha256": got, "detail": f"read back SHA-256 {got}, expected {digest}"})
        return ref.model_copy(update={"ok": True, "state": ReplicaState.OK, "verified_at": now, "sha256": got,
                                      "detail": ""})

    @activity.defn(name="verify_replicas")
    async def verify_replicas(self, document_id: str) -> list[ReplicaRef]:
        """Read every replica of a document back, hash it, and record what was found."""
        record = await self.store.get(document_id)
        if record is None:
            raise _fail(f"document {document_id} is not in the shelter index")
        checked = []
        for ref in record.replicas:
            if ref.state == ReplicaState.NOT_CONFIGURED and ref.network not in self.replicators:
                checked.append(ref)
                continue
            new = await self._check(record.ciphertext_sha256, ref) if ref.locator else ref.model_copy(update={
                "ok": False, "state": ReplicaState.MISSING, "verified_at": _utcnow(),
                "detail": f"never stored on {ref.network.value} ({ref.detail or ref.state.value} before)"})
            await self.store.upsert_replica(document_id, new)
            checked.append(new)
        have = {ref.network for ref in record.replicas}
        for network in self.replicators:  # a configured network the store never reached (or added since)
            if network not in have:
                absent = ReplicaRef(network=network, locator="", sha256="", verified_at=_utcnow(), ok=False,
                                    state=ReplicaState.MISSING, detail=f"never stored on {network.value}")
                await self.store.upsert_replica(document_id, absent)
                checked.append(absent)
        return checked

    @activity.defn(name="repair_replica")
    async def repair_replica(self, inp: RepairInput) -> ReplicaRef:
        """Re-create a lost or corrupted replica from a good copy (another network, else the local cache)."""
        record = await self.store.get(inp.document_id)
        if record is None:
            raise _fail(f"document {inp.document_id} is not in the shelter index")
        if inp.network not in self.replicators:
            raise _fail(f"cannot repair the {inp.network.value} replica of {inp.document_id}: "
                        f"no {inp.network.value} endpoint configured")
        source = await self._source(inp.document_id, record.ciphertext_sha256, skip=inp.network)
        if source is None:
            raise _fail(f"no good copy of document {inp.document_id} is left on any network or in the cache",
                        NO_GOOD_COPY)
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
            raise _fail(f"document {document_id} is not in the shelter index")
        return record

    async def fetch_ciphertext(self, document_id: str) -> bytes:
        """A verified ciphertext of the document (for `westworld shelter open`); not an activity."""
        record = await self.store.get(document_id)
        if record is None:
            raise WestworldError(f"document {document_id} is not in the shelter index")
        source = await self._source(document_id, record.ciphertext_sha256, skip=None)
        if source is None:
            raise WestworldError(f"no good copy of document {document_id} is left", type=NO_GOOD_COPY)
        return source[0]

