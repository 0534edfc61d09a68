"""The shelter's document index (the one writer of ``shelter_documents`` and ``shelter_replicas``; public data
only), and the re-wrapping of data keys when the master key rotates (documents stay where they are).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database
from activities.sql.schema import shelter_documents as documents
from activities.sql.schema import shelter_replicas as replicas
from westworld import envelope
from westworld.shelter import DocumentRecord, EncryptedDocument, Network, ReplicaRef, ReplicaState, data_key_aad


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(at: datetime | None) -> datetime | None:
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=UTC)


class DocumentStore:
    """The ``shelter_documents`` and ``shelter_replicas`` tables."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def insert(self, doc: EncryptedDocument, created_by: str) -> bool:
        """Index a new document; False if a document with this id is stored already (a concurrent store won)."""
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(documents.insert().values(
                    document_id=doc.document_id, title=doc.title, key_epoch=doc.key_epoch,
                    wrapped_key=doc.wrapped_key.model_dump_json(), ciphertext_sha256=doc.ciphertext_sha256,
                    size=doc.size, plaintext_size=doc.plaintext_size, created_by=created_by, created_at=utcnow(),
                ))
        except IntegrityError:
            return False
        return True

    async def created_by(self, document_id: str) -> str | None:
        async with self._db.engine.connect() as conn:
            return (await conn.execute(sa.select(documents.c.created_by)
                                       .where(documents.c.document_id == document_id))).scalar()

    async def get(self, document_id: str) -> DocumentRecord | None:
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
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(sa.select(documents.c.document_id)
                                            .order_by(documents.c.document_id))).scalars())

    async def ids_in_epoch(self, epoch: int) -> list[str]:
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(sa.select(documents.c.document_id)
                                            .where(documents.c.key_epoch == epoch))).scalars())

    async def upsert_replica(self, document_id: str, ref: ReplicaRef) -> None:
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
            return await self.rewrap_in(conn, document_id, old_epoch, new_epoch, sealed.model_dump_json())

    async def rewrap_in(self, conn: AsyncConnection, document_id: str, old_epoch: int, new_epoch: int,
                        wrapped_key_json: str) -> bool:
        """:meth:`rewrap` in the caller's transaction, the wrapped key given as stored (JSON ``Sealed``)."""
        res = await conn.execute(documents.update().where(
            (documents.c.document_id == document_id) & (documents.c.key_epoch == old_epoch))
            .values(key_epoch=new_epoch, wrapped_key=wrapped_key_json))
        return bool(res.rowcount)

    async def ids_in_epochs_in(self, conn: AsyncConnection, epochs: list[int]) -> set[str]:
        """The documents under any of ``epochs``, read in the caller's transaction."""
        query = sa.select(documents.c.document_id).where(documents.c.key_epoch.in_(epochs))
        return set((await conn.execute(query)).scalars())


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
