"""The shelter's document index: tables ``shelter_documents`` and ``shelter_replicas`` (public data only), and the
re-wrapping of data keys when the master key rotates (documents stay where they are).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from activities.shelter_keys import KeyEpochStore, TablesOnce
from activities.store import Database
from westworld import envelope
from westworld.shelter import DocumentRecord, EncryptedDocument, Network, ReplicaRef, ReplicaState, data_key_aad

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(at: datetime | None) -> datetime | None:
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=UTC)


class DocumentStore:
    """The ``shelter_documents`` and ``shelter_replicas`` tables."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._tables = TablesOnce(database, metadata, first=KeyEpochStore(database).init)  # documents name epochs

    async def init(self) -> None:
        await self._tables()

    async def insert(self, doc: EncryptedDocument, created_by: str) -> None:
        await self.init()
        async with self._db.engine.begin() as conn:
            await conn.execute(documents.insert().values(
                document_id=doc.document_id, title=doc.title, key_epoch=doc.key_epoch,
                wrapped_key=doc.wrapped_key.model_dump_json(), ciphertext_sha256=doc.ciphertext_sha256,
                size=doc.size, plaintext_size=doc.plaintext_size, created_by=created_by, created_at=utcnow(),
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
