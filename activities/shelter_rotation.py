"""Guardian rotation activities: the one-time rotation key, re-splitting the master key, activating the new epoch.

Key material handled here and nowhere else: the rotation key's private half (a 0600 file under
``<data dir>/shelter/rotation/``, deleted once the shares are re-split or the rotation is abandoned; it never
enters history, logs or the database), the clear shares handed in, and the master key they combine to. They live
only in :meth:`RotationActivities.reshare_master_key`'s frame. Table ``shelter_rotations`` holds the pending
epoch (public: sealed shares, commitments, hashes of the acknowledgement proofs) until it is activated.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.shelter_docs import DocumentStore, documents
from activities.shelter_keys import KeyEpochStore, key_epochs
from activities.store import Database
from westworld import envelope, shamir
from westworld.errors import INVALID_INPUT, DecryptFailed, InvalidShare
from westworld.rotation import BeginRotationInput, PendingEpoch, ReshareInput, RotationPlan, ack_hash, ack_proof
from westworld.shelter import EncryptedShare, Guardian, KeyEpoch, data_key_aad, share_aad
from westworld.shelter_access import handoff_aad

metadata = sa.MetaData()

rotations = sa.Table(
    "shelter_rotations", metadata,
    sa.Column("rotation_id", sa.String(200), primary_key=True),
    sa.Column("from_epoch", sa.Integer, nullable=False),
    sa.Column("pending", sa.Text, nullable=False),  # PendingEpoch JSON (public data only)
    sa.Column("state", sa.String(16), nullable=False),  # pending | active | abandoned
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rewraps = sa.Table(
    "shelter_rewraps", metadata,
    sa.Column("rotation_id", sa.String(200), primary_key=True),
    sa.Column("document_id", sa.String(64), primary_key=True),
    sa.Column("from_epoch", sa.Integer, nullable=False),
    sa.Column("wrapped_key", sa.Text, nullable=False),  # JSON Sealed: the data key sealed to the NEW master public key
)


def _permanent(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_INPUT, non_retryable=True)


class RotationActivities:
    """Built with the project's :class:`Database` and the shelter's directory in the data dir."""

    def __init__(self, database: Database, shelter_dir: Path) -> None:
        self._db = database
        self._epochs = KeyEpochStore(database)
        self._keys_dir = shelter_dir / "rotation"
        self.next_guardians_file = shelter_dir / "next-guardians.json"
        self._ready = False

    async def _init(self) -> None:
        if not self._ready:
            await self._epochs.init()
            async with self._db.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            self._ready = True

    def _key_file(self, rotation_id: str) -> Path:
        return self._keys_dir / f"{hashlib.sha256(rotation_id.encode()).hexdigest()[:32]}.key"

    def _rotation_public_key(self, rotation_id: str) -> str:
        """Make (once) the rotation's X25519 key; only its public half leaves this process."""
        path = self._key_file(rotation_id)
        self._keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_bytes(32).hex())
            except FileExistsError:
                pass
        return envelope.public_key(bytes.fromhex(path.read_text().strip())).hex()

    @activity.defn(name="begin_rotation")
    async def begin_rotation(self, plan: BeginRotationInput) -> RotationPlan:
        """Fill in the plan: the current epoch, the new set (given, registered as next, or the current one),
        the threshold, and the rotation key's public half."""
        await self._init()
        current = await self._epochs.current()
        if current is None:
            raise _permanent("no active shelter key epoch to rotate: run `westworld shelter guardians init` first")
        guardians = plan.new_guardians
        if not guardians and self.next_guardians_file.exists():
            guardians = [Guardian.model_validate(g) for g in json.loads(self.next_guardians_file.read_text())]
        guardians = guardians or list(current.guardians)
        threshold = plan.threshold or current.threshold
        if not 2 <= threshold <= len(guardians):
            raise _permanent(f"threshold {threshold} is not possible with {len(guardians)} new guardians")
        return RotationPlan(rotation_id=plan.rotation_id, from_epoch=current, new_guardians=guardians,
                            threshold=threshold, rotation_public_key=self._rotation_public_key(plan.rotation_id))

    async def _pending(self, rotation_id: str) -> PendingEpoch | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(rotations).where(rotations.c.rotation_id == rotation_id))).first()
        return None if row is None else PendingEpoch.model_validate_json(row._mapping["pending"])

    @activity.defn(name="reshare_master_key")
    async def reshare_master_key(self, inp: ReshareInput) -> PendingEpoch:
        """Open the handed-in shares, check them against their commitments, combine, re-split with fresh
        randomness for the new set and store the new epoch as pending (idempotent by rotation id)."""
        await self._init()
        plan = inp.plan
        if (done := await self._pending(plan.rotation_id)) is not None:
            return done
        key_file = self._key_file(plan.rotation_id)
        if not key_file.exists():
            raise _permanent(f"{plan.rotation_id}: the rotation key is gone (abandoned?); start a new rotation")
        rotation_private = bytes.fromhex(key_file.read_text().strip())
        old = plan.from_epoch
        try:
            shares = [shamir.Share(index=s.index, value=envelope.open_sealed(
                rotation_private, s.sealed, handoff_aad(plan.rotation_id, s.index))) for s in inp.shares]
            shamir.check_shares(shares, old.commitments(), bytes.fromhex(old.salt))
            master = shamir.combine(shares, old.threshold)
        except (InvalidShare, DecryptFailed) as err:
            raise ApplicationError(f"{plan.rotation_id}: {err.message}", type=err.type, non_retryable=True) from err
        if envelope.public_key(master).hex() != old.master_public_key:
            raise ApplicationError(f"{plan.rotation_id}: the shares combine to a key that is not epoch "
                                   f"{old.epoch}'s master key", type=INVALID_INPUT, non_retryable=True)
        async with self._db.engine.connect() as conn:
            latest = int((await conn.execute(sa.select(sa.func.max(key_epochs.c.epoch)))).scalar() or 0)
        number = latest + 1
        rewrap_rows: list[dict[str, object]] = []
        if inp.rotate_master_key:  # a new master key; every data key under the old one is re-wrapped (pending)
            old_master, master = master, secrets.token_bytes(32)
            rewrap_rows = await self._rewrap(plan.rotation_id, old, old_master, envelope.public_key(master))
            del old_master
        salt = secrets.token_bytes(32)
        new_shares = shamir.split(master, plan.threshold, len(plan.new_guardians), secrets.token_bytes)
        sealed, hashes = [], {}
        for guardian, share in zip(plan.new_guardians, new_shares, strict=True):
            box = envelope.seal(bytes.fromhex(guardian.encryption_public_key), share.value,
                                share_aad(number, guardian.id, share.index), secrets.token_bytes(32),
                                secrets.token_bytes(12))
            sealed.append(EncryptedShare(guardian_id=guardian.id, index=share.index,
                                         commitment=shamir.commitment(share, salt), sealed=box))
            hashes[guardian.id] = ack_hash(ack_proof(share.value, plan.rotation_id, number, share.index))
        new_public = envelope.public_key(master).hex()
        del master, shares, new_shares, rotation_private
        pending = PendingEpoch(
            rotation_id=plan.rotation_id, from_epoch=old.epoch, ack_hashes=hashes,
            rewrapped_documents=len(rewrap_rows),
            master_key_rotated=inp.rotate_master_key,
            epoch=KeyEpoch(epoch=number, threshold=plan.threshold, master_public_key=new_public, salt=salt.hex(),
                           guardians=plan.new_guardians, shares=sealed, created_at=datetime.now(UTC),
                           epoch_key=plan.rotation_id),
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(rotations.insert().values(
                rotation_id=plan.rotation_id, from_epoch=old.epoch, pending=pending.model_dump_json(),
                state="pending", updated_at=datetime.now(UTC)))
            if rewrap_rows:
                await conn.execute(rewraps.insert(), rewrap_rows)
        key_file.unlink(missing_ok=True)
        return pending

    async def _same_key_epochs(self, conn: AsyncConnection, master_public_key: str) -> list[int]:
        query = sa.select(key_epochs.c.epoch).where(key_epochs.c.master_public_key == master_public_key)
        return list((await conn.execute(query)).scalars())

    async def _rewrap(self, rotation_id: str, old: KeyEpoch, old_master: bytes,
                      new_public: bytes) -> list[dict[str, object]]:
        """Every data key under the old master key (in any epoch that held it), sealed to the new master public key.
        Kept aside until activation: until then the documents stay openable with the old shares."""
        docs = DocumentStore(self._db)
        await docs.init()
        async with self._db.engine.connect() as conn:
            epochs = await self._same_key_epochs(conn, old.master_public_key)
        rows: list[dict[str, object]] = []
        for e in epochs:
            for document_id in await docs.ids_in_epoch(e):
                record = await docs.get(document_id)
                if record is None:
                    continue
                aad = data_key_aad(document_id)
                data_key = envelope.open_sealed(old_master, record.wrapped_key, aad)
                sealed = envelope.seal(new_public, data_key, aad, secrets.token_bytes(32), secrets.token_bytes(12))
                del data_key
                rows.append({"rotation_id": rotation_id, "document_id": document_id, "from_epoch": e,
                             "wrapped_key": sealed.model_dump_json()})
        return rows

    @activity.defn(name="activate_key_epoch")
    async def activate_key_epoch(self, pending: PendingEpoch) -> KeyEpoch:
        """Make the pending epoch current and retire the old one, in one transaction (idempotent)."""
        await self._init()
        e = pending.epoch
        if (existing := await self._epochs.by_key(pending.rotation_id)) is not None:
            return existing
        old = await self._epochs.get(pending.from_epoch)
        if old is None:
            raise _permanent(f"{pending.rotation_id}: epoch {pending.from_epoch} is gone")
        async with self._db.engine.begin() as conn:
            if pending.master_key_rotated:
                await self._apply_rewraps(conn, pending, old.master_public_key)
            await conn.execute(key_epochs.insert().values(
                epoch=e.epoch, epoch_key=pending.rotation_id, threshold=e.threshold,
                master_public_key=e.master_public_key, salt=e.salt,
                guardians=json.dumps([g.model_dump(mode="json") for g in e.guardians]),
                shares=json.dumps([s.model_dump(mode="json") for s in e.shares]),
                created_at=e.created_at, retired=False,
            ))
            await conn.execute(key_epochs.update().where(key_epochs.c.epoch == pending.from_epoch)
                               .values(retired=True))
            await conn.execute(rotations.update().where(rotations.c.rotation_id == pending.rotation_id)
                               .values(state="active", updated_at=datetime.now(UTC)))
        return e

    async def _apply_rewraps(self, conn: AsyncConnection, pending: PendingEpoch, old_public: str) -> None:
        """Swap in the re-wrapped data keys; refuse (changing nothing) if a document under the old key is not
        covered (stored after the re-split): the old epoch then stays current and a new rotation covers it."""
        epochs = await self._same_key_epochs(conn, old_public)
        under_old = set((await conn.execute(sa.select(documents.c.document_id)
                                            .where(documents.c.key_epoch.in_(epochs)))).scalars())
        rows = (await conn.execute(sa.select(rewraps).where(rewraps.c.rotation_id == pending.rotation_id))).all()
        missing = sorted(under_old - {r.document_id for r in rows})
        if missing:
            raise _permanent(f"{pending.rotation_id}: document(s) {missing} were stored under the old master key "
                             "after the re-split; the old epoch stays current — run a new master-key rotation")
        for r in rows:
            await conn.execute(documents.update().where(
                (documents.c.document_id == r.document_id) & (documents.c.key_epoch == r.from_epoch))
                .values(key_epoch=pending.epoch.epoch, wrapped_key=r.wrapped_key))

    @activity.defn(name="abandon_rotation")
    async def abandon_rotation(self, rotation_id: str) -> None:
        """Forget the rotation key and any pending epoch; the current epoch stays as it was."""
        await self._init()
        self._key_file(rotation_id).unlink(missing_ok=True)
        async with self._db.engine.begin() as conn:
            await conn.execute(rotations.update().where(rotations.c.rotation_id == rotation_id)
                               .values(state="abandoned", updated_at=datetime.now(UTC)))

