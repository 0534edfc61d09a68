"""Key ceremony activities: create a key epoch (master key, Shamir split, commitments, shares sealed to guardians),
read and retire epochs (stored by :class:`activities.sql.key_epoch_store.KeyEpochStore`, public data only).

The master private key and the clear shares exist only inside :meth:`ShelterKeyActivities.create_key_epoch`'s
frame: generated with ``secrets``, split, sealed, then dropped. (CPython cannot guarantee erasure of ``bytes``;
they are never logged, returned, or stored.)
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from temporalio import activity

from activities.sql.database import Database
from activities.sql.key_epoch_store import KeyEpochStore
from westworld import envelope, shamir
from westworld.errors import InvalidInput
from westworld.shelter import (
    MASTER_KEY_BYTES,
    CreateEpochInput,
    EncryptedShare,
    KeyEpoch,
    KeyEpochStatus,
    check_ceremony,
    share_aad,
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


async def create_epoch(store: KeyEpochStore, inp: CreateEpochInput) -> KeyEpoch:
    """Make and store a new epoch numbered after the latest, unchecked (tests and benchmarks; the worker creates
    epochs only through :func:`create_ceremony_epoch` and the rotation); a repeated ``epoch_key`` returns the
    stored one."""
    return await store.insert_next(inp.epoch_key, lambda status: make_epoch(inp, status.latest + 1, datetime.now(UTC)))


async def create_ceremony_epoch(store: KeyEpochStore, inp: CreateEpochInput) -> KeyEpoch:
    """Make and store a ceremony's epoch if :func:`check_ceremony` allows it against the epochs stored: genesis
    only while none exists, later ones with k current guardians' approvals. Of two racing ceremonies (or a
    ceremony and a rotation) one wins and the other is checked again against the winner. A repeated
    ``epoch_key`` returns the stored epoch.

    Raises:
        PermanentError: ``UNAUTHORISED``, from :func:`check_ceremony`.
    """
    if not inp.epoch_key:
        raise InvalidInput("a key ceremony needs an epoch_key (its approvals sign it)")
    epoch_key = inp.epoch_key

    def build(status: KeyEpochStatus) -> KeyEpoch:
        check_ceremony(inp, epoch_key, status.current, status.latest > 0)
        return make_epoch(inp, status.latest + 1, datetime.now(UTC))

    return await store.insert_next(epoch_key, build)


class ShelterKeyActivities:
    """Built with the project's :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self.store = KeyEpochStore(database)

    @activity.defn(name="create_key_epoch")
    async def create_key_epoch(self, inp: CreateEpochInput) -> KeyEpoch:
        """Generate and split a new master key; store and return the public epoch (idempotent by ``epoch_key``).

        Unchecked: not registered on the worker (ceremonies before the gate called it); tests seed epochs with it.
        """
        return await create_epoch(self.store, inp)

    @activity.defn(name="create_ceremony_epoch")
    async def create_ceremony_epoch(self, inp: CreateEpochInput) -> KeyEpoch:
        """A ceremony's epoch, allowed and created atomically by :func:`create_ceremony_epoch`."""
        return await create_ceremony_epoch(self.store, inp)

    @activity.defn(name="key_epoch_status")
    async def key_epoch_status(self, epoch_key: str) -> KeyEpochStatus:
        """The current epoch, the highest epoch number and the epoch ``epoch_key`` made, for the ceremony's check."""
        return await self.store.status(epoch_key)

    @activity.defn(name="current_key_epoch")
    async def current_key_epoch(self) -> KeyEpoch:
        """The latest epoch that is not retired."""
        epoch = await self.store.current()
        if epoch is None:
            raise InvalidInput("no active shelter key epoch: run `westworld shelter guardians init` first "
                               "(after each guardian made a key with `westworld shelter keygen`)")
        return epoch

    @activity.defn(name="get_key_epoch")
    async def get_key_epoch(self, epoch: int) -> KeyEpoch:
        found = await self.store.get(epoch)
        if found is None:
            raise InvalidInput(f"shelter key epoch {epoch} does not exist")
        return found

    @activity.defn(name="retire_key_epoch")
    async def retire_key_epoch(self, epoch: int) -> None:
        if not await self.store.retire(epoch):
            raise InvalidInput(f"shelter key epoch {epoch} does not exist")
