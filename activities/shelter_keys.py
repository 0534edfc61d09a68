"""Key ceremony activities: create a key epoch (master key, Shamir split, commitments, shares sealed to guardians),
read and retire epochs. Table ``shelter_key_epochs`` holds only public data.

The master private key and the clear shares exist only inside :meth:`ShelterKeyActivities.create_key_epoch`'s
frame: generated with ``secrets``, split, sealed, then dropped. (CPython cannot guarantee erasure of ``bytes``;
they are never logged, returned, or stored.)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, ProgrammingError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.store import Database
from westworld import envelope, shamir
from westworld.errors import INVALID_INPUT, WestworldError
from westworld.shelter import (
    MASTER_KEY_BYTES,
    CreateEpochInput,
    EncryptedShare,
    Guardian,
    KeyEpoch,
    KeyEpochStatus,
    check_ceremony,
    share_aad,
)

metadata = sa.MetaData()

key_epochs = sa.Table(
    "shelter_key_epochs", metadata,
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch_key", sa.String(128), unique=True),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("master_public_key", sa.String(64), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("guardians", sa.Text, nullable=False),  # JSON list of Guardian
    sa.Column("shares", sa.Text, nullable=False),  # JSON list of EncryptedShare (sealed boxes + commitments)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, default=False),
)


def _row_to_epoch(row: sa.Row[tuple[object, ...]]) -> KeyEpoch:
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


def make_epoch(inp: CreateEpochInput, epoch: int, now: datetime) -> KeyEpoch:
    """Generate a master key, split it, commit to and seal every share; return only the public epoch."""
    master = secrets.token_bytes(MASTER_KEY_BYTES)
    salt = secrets.token_bytes(32)
    shares = shamir.split(master, inp.threshold, len(inp.guardians), secrets.token_bytes)
    master_public = envelope.public_key(master)
    del master
    sealed: list[EncryptedShare] = []
    for guardian, share in zip(inp.guardians, shares, strict=True):
        box = envelope.seal(
            bytes.fromhex(guardian.encryption_public_key), share.value,
            share_aad(epoch, guardian.id, share.index), secrets.token_bytes(32), secrets.token_bytes(12),
        )
        sealed.append(EncryptedShare(guardian_id=guardian.id, index=share.index,
                                     commitment=shamir.commitment(share, salt), sealed=box))
    del shares
    return KeyEpoch(epoch=epoch, threshold=inp.threshold, master_public_key=master_public.hex(), salt=salt.hex(),
                    guardians=list(inp.guardians), shares=sealed, created_at=now, epoch_key=inp.epoch_key)


async def create_tables(database: Database, tables: sa.MetaData) -> None:
    """Create ``tables`` if missing; another process (or task) creating them at the same moment is not an error."""
    for attempt in range(3):
        try:
            async with database.engine.begin() as conn:
                await conn.run_sync(tables.create_all)
            return
        except (ProgrammingError, IntegrityError):  # PostgreSQL: "already exists" from a concurrent creator
            if attempt == 2:
                raise


class TablesOnce:
    """Creates ``tables`` (after ``first``, e.g. the tables they reference) on the first call; later calls return at
    once and concurrent first calls wait for the one that creates them."""

    def __init__(self, database: Database, tables: sa.MetaData,
                 first: Callable[[], Awaitable[None]] | None = None) -> None:
        self._db = database
        self._tables = tables
        self._first = first
        self._ready = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                if self._first is not None:
                    await self._first()
                await create_tables(self._db, self._tables)
                self._ready = True


class KeyEpochStore:
    """The ``shelter_key_epochs`` table."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._tables = TablesOnce(database, metadata)

    async def init(self) -> None:
        await self._tables()

    async def by_key(self, epoch_key: str) -> KeyEpoch | None:
        await self.init()
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(key_epochs).where(key_epochs.c.epoch_key == epoch_key))).first()
        return None if row is None else _row_to_epoch(row)

    async def get(self, epoch: int) -> KeyEpoch | None:
        await self.init()
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(key_epochs).where(key_epochs.c.epoch == epoch))).first()
        return None if row is None else _row_to_epoch(row)

    async def current(self) -> KeyEpoch | None:
        await self.init()
        query = sa.select(key_epochs).where(key_epochs.c.retired.is_(False)).order_by(key_epochs.c.epoch.desc())
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query.limit(1))).first()
        return None if row is None else _row_to_epoch(row)

    async def status(self, epoch_key: str | None = None) -> KeyEpochStatus:
        await self.init()
        async with self._db.engine.connect() as conn:
            latest = (await conn.execute(sa.select(sa.func.max(key_epochs.c.epoch)))).scalar()
        return KeyEpochStatus(current=await self.current(), latest=int(latest or 0),
                              created=await self.by_key(epoch_key) if epoch_key else None)

    async def create(self, inp: CreateEpochInput) -> KeyEpoch:
        """Insert a new epoch numbered after the latest, unchecked (tests and benchmarks; the worker creates epochs
        only through :meth:`create_ceremony` and the rotation); a repeated ``epoch_key`` returns the stored one."""
        return await self._create(inp, check=False)

    async def create_ceremony(self, inp: CreateEpochInput) -> KeyEpoch:
        """Insert a ceremony's epoch if :func:`check_ceremony` allows it against the epochs stored: genesis only
        while none exists, later ones with k current guardians' approvals. Atomic: the new epoch takes the next
        number (the primary key), so of two racing ceremonies (or a ceremony and a rotation) one wins and the other
        is checked again against the winner. A repeated ``epoch_key`` returns the stored epoch.

        Raises:
            WestworldError: ``UNAUTHORISED``, from :func:`check_ceremony`.
        """
        if not inp.epoch_key:
            raise WestworldError("a key ceremony needs an epoch_key (its approvals sign it)")
        return await self._create(inp, check=True)

    async def _create(self, inp: CreateEpochInput, *, check: bool) -> KeyEpoch:
        await self.init()
        for _ in range(5):
            if inp.epoch_key and (existing := await self.by_key(inp.epoch_key)) is not None:
                return existing
            status = await self.status()
            if check:
                check_ceremony(inp, inp.epoch_key or "", status.current, status.latest > 0)
            epoch = make_epoch(inp, status.latest + 1, datetime.now(UTC))
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(key_epochs.insert().values(
                        epoch=epoch.epoch, epoch_key=epoch.epoch_key, threshold=epoch.threshold,
                        master_public_key=epoch.master_public_key, salt=epoch.salt,
                        guardians=json.dumps([g.model_dump(mode="json") for g in epoch.guardians]),
                        shares=json.dumps([s.model_dump(mode="json") for s in epoch.shares]),
                        created_at=epoch.created_at, retired=False,
                    ))
            except IntegrityError:
                continue  # another creator took this number (or this epoch_key): look again, check again
            return epoch
        raise RuntimeError("could not allocate a key epoch number after 5 attempts")

    async def retire(self, epoch: int) -> bool:
        await self.init()
        async with self._db.engine.begin() as conn:
            res = await conn.execute(key_epochs.update().where(key_epochs.c.epoch == epoch).values(retired=True))
        return bool(res.rowcount)


class ShelterKeyActivities:
    """Built with the project's :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self.store = KeyEpochStore(database)

    @activity.defn(name="create_key_epoch")
    async def create_key_epoch(self, inp: CreateEpochInput) -> KeyEpoch:
        """Generate and split a new master key; store and return the public epoch (idempotent by ``epoch_key``).

        Unchecked: not registered on the worker (ceremonies before the gate called it); tests seed epochs with it.
        """
        return await self.store.create(inp)

    @activity.defn(name="create_ceremony_epoch")
    async def create_ceremony_epoch(self, inp: CreateEpochInput) -> KeyEpoch:
        """A ceremony's epoch, allowed and created atomically by :meth:`KeyEpochStore.create_ceremony`."""
        try:
            return await self.store.create_ceremony(inp)
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err

    @activity.defn(name="key_epoch_status")
    async def key_epoch_status(self, epoch_key: str) -> KeyEpochStatus:
        """The current epoch, the highest epoch number and the epoch ``epoch_key`` made, for the ceremony's check."""
        return await self.store.status(epoch_key)

    @activity.defn(name="current_key_epoch")
    async def current_key_epoch(self) -> KeyEpoch:
        """The latest epoch that is not retired."""
        epoch = await self.store.current()
        if epoch is None:
            raise ApplicationError("no active shelter key epoch: run `westworld shelter keygen` first",
                                   type=INVALID_INPUT, non_retryable=True)
        return epoch

    @activity.defn(name="get_key_epoch")
    async def get_key_epoch(self, epoch: int) -> KeyEpoch:
        found = await self.store.get(epoch)
        if found is None:
            raise ApplicationError(f"shelter key epoch {epoch} does not exist", type=INVALID_INPUT,
                                   non_retryable=True)
        return found

    @activity.defn(name="retire_key_epoch")
    async def retire_key_epoch(self, epoch: int) -> None:
        if not await self.store.retire(epoch):
            raise ApplicationError(f"shelter key epoch {epoch} does not exist", type=INVALID_INPUT,
                                   non_retryable=True)
