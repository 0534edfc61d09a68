"""Guardian rotations in progress (the one writer of ``shelter_rotations`` and ``shelter_rewraps``): the pending
epoch (public data: sealed shares, commitments, hashes of the acknowledgement proofs) and the data keys re-wrapped
to a new master key, kept aside until the rotation is activated.

Activation changes three owners' tables in ONE transaction: the new epoch and the old one's retirement go through
:class:`KeyEpochStore`, the swapped data keys through :class:`DocumentStore`, on this store's connection.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database
from activities.sql.document_store import DocumentStore
from activities.sql.key_epoch_store import KeyEpochStore
from activities.sql.schema import shelter_rewraps as rewraps
from activities.sql.schema import shelter_rotations as rotations
from westworld.errors import InvalidInput
from westworld.rotation import PendingEpoch


class RotationStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self.epochs = KeyEpochStore(database)
        self.documents = DocumentStore(database)

    async def pending(self, rotation_id: str) -> PendingEpoch | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(rotations).where(rotations.c.rotation_id == rotation_id))).first()
        return None if row is None else PendingEpoch.model_validate_json(row._mapping["pending"])

    async def save_pending(self, pending: PendingEpoch, rewrapped: dict[str, tuple[int, str]]) -> None:
        """Store the pending epoch and the re-wrapped data keys (document id -> (its epoch, wrapped key JSON))."""
        async with self._db.engine.begin() as conn:
            await conn.execute(rotations.insert().values(
                rotation_id=pending.rotation_id, from_epoch=pending.from_epoch, pending=pending.model_dump_json(),
                state="pending", updated_at=datetime.now(UTC)))
            if rewrapped:
                await conn.execute(rewraps.insert(), [
                    {"rotation_id": pending.rotation_id, "document_id": document_id, "from_epoch": epoch,
                     "wrapped_key": wrapped} for document_id, (epoch, wrapped) in rewrapped.items()])

    async def epochs_with_master_key(self, master_public_key: str) -> list[int]:
        async with self._db.engine.connect() as conn:
            return await self.epochs.epochs_with_master_key(conn, master_public_key)

    async def activate(self, pending: PendingEpoch, old_master_public_key: str) -> None:
        """Make the pending epoch current, retire the old one and (for a new master key) swap in the re-wrapped
        data keys, in one transaction.

        Raises:
            InvalidInput: a document under the old master key has no re-wrapped key (stored after the re-split);
                nothing is changed.
        """
        async with self._db.engine.begin() as conn:
            if pending.master_key_rotated:
                await self._apply_rewraps(conn, pending, old_master_public_key)
            await self.epochs.insert_in(conn, pending.epoch.model_copy(update={"epoch_key": pending.rotation_id}))
            await self.epochs.retire_in(conn, pending.from_epoch)
            await conn.execute(rotations.update().where(rotations.c.rotation_id == pending.rotation_id)
                               .values(state="active", updated_at=datetime.now(UTC)))

    async def _apply_rewraps(self, conn: AsyncConnection, pending: PendingEpoch, old_public: str) -> None:
        epochs = await self.epochs.epochs_with_master_key(conn, old_public)
        under_old = await self.documents.ids_in_epochs_in(conn, epochs)
        rows = (await conn.execute(sa.select(rewraps).where(rewraps.c.rotation_id == pending.rotation_id))).all()
        missing = sorted(under_old - {r.document_id for r in rows})
        if missing:
            raise InvalidInput(f"{pending.rotation_id}: document(s) {missing} were stored under the old master key "
                               "after the re-split; the old epoch stays current — run a new master-key rotation")
        for r in rows:
            await self.documents.rewrap_in(conn, r.document_id, r.from_epoch, pending.epoch.epoch, r.wrapped_key)

    async def abandon(self, rotation_id: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(rotations.update().where(rotations.c.rotation_id == rotation_id)
                               .values(state="abandoned", updated_at=datetime.now(UTC)))
