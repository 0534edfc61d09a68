"""The shelter's key epochs (the one writer of ``shelter_key_epochs``; public data only: the master public key,
the threshold, the guardians and their sealed shares with commitments)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database
from activities.sql.schema import shelter_key_epochs as key_epochs
from westworld.shelter import EncryptedShare, Guardian, KeyEpoch, KeyEpochStatus

ALLOCATE_ATTEMPTS = 5


def _row_to_epoch(row: sa.Row[Any]) -> KeyEpoch:
    m = row._mapping
    created = m["created_at"]
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return KeyEpoch(
        epoch=m["epoch"], threshold=m["threshold"], master_public_key=m["master_public_key"], salt=m["salt"],
        guardians=[Guardian.model_validate(g) for g in json.loads(m["guardians"])],
        shares=[EncryptedShare.model_validate(s) for s in json.loads(m["shares"])],
        created_at=created, retired=bool(m["retired"]), epoch_key=m["epoch_key"],
    )


class KeyEpochStore:
    """The ``shelter_key_epochs`` table."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def by_key(self, epoch_key: str) -> KeyEpoch | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(key_epochs).where(key_epochs.c.epoch_key == epoch_key))).first()
        return None if row is None else _row_to_epoch(row)

    async def get(self, epoch: int) -> KeyEpoch | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(key_epochs).where(key_epochs.c.epoch == epoch))).first()
        return None if row is None else _row_to_epoch(row)

    async def current(self) -> KeyEpoch | None:
        query = sa.select(key_epochs).where(key_epochs.c.retired.is_(False)).order_by(key_epochs.c.epoch.desc())
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query.limit(1))).first()
        return None if row is None else _row_to_epoch(row)

    async def latest_number(self) -> int:
        """The highest epoch number stored (0 before the first)."""
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.max(key_epochs.c.epoch)))).scalar() or 0)

    async def status(self, epoch_key: str | None = None) -> KeyEpochStatus:
        return KeyEpochStatus(current=await self.current(), latest=await self.latest_number(),
                              created=await self.by_key(epoch_key) if epoch_key else None)

    async def insert_next(self, epoch_key: str | None, build: Callable[[KeyEpochStatus], KeyEpoch]) -> KeyEpoch:
        """Insert the epoch ``build`` makes from the current status, numbered after the latest. Atomic: the number
        is the primary key, so of two racing creators one wins and the other's ``build`` runs again against the
        winner (it may refuse by raising). A repeated ``epoch_key`` returns the stored epoch.

        Raises:
            RuntimeError: no number could be taken in :data:`ALLOCATE_ATTEMPTS` tries (contention; retried).
        """
        for _ in range(ALLOCATE_ATTEMPTS):
            if epoch_key and (existing := await self.by_key(epoch_key)) is not None:
                return existing
            epoch = build(await self.status())
            try:
                async with self._db.engine.begin() as conn:
                    await self.insert_in(conn, epoch)
            except IntegrityError:
                continue  # another creator took this number (or this epoch_key): look again, build again
            return epoch
        raise RuntimeError(f"could not allocate a key epoch number after {ALLOCATE_ATTEMPTS} attempts")

    async def insert_in(self, conn: AsyncConnection, epoch: KeyEpoch) -> None:
        """Insert ``epoch`` (not retired) in the caller's transaction."""
        await conn.execute(key_epochs.insert().values(
            epoch=epoch.epoch, epoch_key=epoch.epoch_key, threshold=epoch.threshold,
            master_public_key=epoch.master_public_key, salt=epoch.salt,
            guardians=json.dumps([g.model_dump(mode="json") for g in epoch.guardians]),
            shares=json.dumps([s.model_dump(mode="json") for s in epoch.shares]),
            created_at=epoch.created_at, retired=False,
        ))

    async def retire_in(self, conn: AsyncConnection, epoch: int) -> bool:
        """Retire ``epoch`` in the caller's transaction; whether it exists."""
        res = await conn.execute(key_epochs.update().where(key_epochs.c.epoch == epoch).values(retired=True))
        return bool(res.rowcount)

    async def retire(self, epoch: int) -> bool:
        async with self._db.engine.begin() as conn:
            return await self.retire_in(conn, epoch)

    async def epochs_with_master_key(self, conn: AsyncConnection, master_public_key: str) -> list[int]:
        """Every epoch that holds this master key (a guardian rotation without a new master key keeps it)."""
        query = sa.select(key_epochs.c.epoch).where(key_epochs.c.master_public_key == master_public_key)
        return list((await conn.execute(query)).scalars())
