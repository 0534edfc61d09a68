"""Guardian rotation activities: the one-time rotation key, re-splitting the master key, activating the new epoch.

Key material handled here and nowhere else: the rotation key's private half (a 0600 file under
``<data dir>/shelter/rotation/``, deleted once the shares are re-split or the rotation is abandoned; it never
enters history, logs or the database), the clear shares handed in, and the master key they combine to. They live
only in :meth:`RotationActivities.reshare_master_key`'s frame. :class:`activities.sql.rotation_store.RotationStore`
holds the pending epoch (public: sealed shares, commitments, hashes of the acknowledgement proofs) until it is
activated.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity

from activities.sql.database import Database
from activities.sql.rotation_store import RotationStore
from westworld import envelope, shamir
from westworld.errors import DecryptFailed, InvalidInput, InvalidShare, PermanentError
from westworld.rotation import (
    BeginRotationInput,
    PendingEpoch,
    ReshareInput,
    RotationPlan,
    ack_hash,
    ack_proof,
    enough_guardians,
)
from westworld.shelter import EncryptedShare, Guardian, KeyEpoch, data_key_aad, share_aad
from westworld.shelter_access import handoff_aad


class RotationActivities:
    """Built with the project's :class:`Database` and the shelter's directory in the data dir."""

    def __init__(self, database: Database, shelter_dir: Path) -> None:
        self._store = RotationStore(database)
        self._epochs = self._store.epochs
        self._keys_dir = shelter_dir / "rotation"
        self.next_guardians_file = shelter_dir / "next-guardians.json"

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
        current = await self._epochs.current()
        if current is None:
            raise InvalidInput("no active shelter key epoch to rotate: run `westworld shelter guardians init` first")
        guardians = plan.new_guardians
        if not guardians and self.next_guardians_file.exists():
            guardians = [Guardian.model_validate(g) for g in json.loads(self.next_guardians_file.read_text())]
        guardians = guardians or list(current.guardians)
        threshold = plan.threshold or current.threshold
        if threshold < 2:
            raise InvalidInput(f"threshold {threshold} is not possible: k is at least 2")
        enough_guardians(plan.rotation_id, threshold, guardians)  # e.g. a set registered with --next
        return RotationPlan(rotation_id=plan.rotation_id, from_epoch=current, new_guardians=guardians,
                            threshold=threshold, rotation_public_key=self._rotation_public_key(plan.rotation_id))

    @activity.defn(name="reshare_master_key")
    async def reshare_master_key(self, inp: ReshareInput) -> PendingEpoch:
        """Open the handed-in shares, check them against their commitments, combine, re-split with fresh
        randomness for the new set and store the new epoch as pending (idempotent by rotation id)."""
        plan = inp.plan
        if (done := await self._store.pending(plan.rotation_id)) is not None:
            return done
        key_file = self._key_file(plan.rotation_id)
        if not key_file.exists():
            raise InvalidInput(f"{plan.rotation_id}: the rotation key is gone (abandoned?); start a new rotation")
        rotation_private = bytes.fromhex(key_file.read_text().strip())
        old = plan.from_epoch
        try:
            shares = [shamir.Share(index=s.index, value=envelope.open_sealed(
                rotation_private, s.sealed, handoff_aad(plan.rotation_id, s.index))) for s in inp.shares]
            shamir.check_shares(shares, old.commitments(), bytes.fromhex(old.salt))
            master = shamir.combine(shares, old.threshold)
        except (InvalidShare, DecryptFailed) as err:
            raise PermanentError(f"{plan.rotation_id}: {err.message}", type=err.type) from err
        if envelope.public_key(master).hex() != old.master_public_key:
            raise InvalidInput(f"{plan.rotation_id}: the shares combine to a key that is not epoch "
                               f"{old.epoch}'s master key")
        number = await self._epochs.latest_number() + 1
        rewrapped: dict[str, tuple[int, str]] = {}
        if inp.rotate_master_key:  # a new master key; every data key under the old one is re-wrapped (pending)
            old_master, master = master, secrets.token_bytes(32)
            rewrapped = await self._rewrap(old, old_master, envelope.public_key(master))
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
            rewrapped_documents=len(rewrapped),
            master_key_rotated=inp.rotate_master_key,
            epoch=KeyEpoch(epoch=number, threshold=plan.threshold, master_public_key=new_public, salt=salt.hex(),
                           guardians=plan.new_guardians, shares=sealed, created_at=datetime.now(UTC),
                           epoch_key=plan.rotation_id),
        )
        await self._store.save_pending(pending, rewrapped)
        key_file.unlink(missing_ok=True)
        return pending

    async def _rewrap(self, old: KeyEpoch, old_master: bytes, new_public: bytes) -> dict[str, tuple[int, str]]:
        """Every data key under the old master key (in any epoch that held it), sealed to the new master public key:
        document id -> (its epoch, wrapped key JSON). Kept aside until activation: until then the documents stay
        openable with the old shares."""
        docs = self._store.documents
        rows: dict[str, tuple[int, str]] = {}
        for e in await self._store.epochs_with_master_key(old.master_public_key):
            for document_id in await docs.ids_in_epoch(e):
                record = await docs.get(document_id)
                if record is None:
                    continue
                aad = data_key_aad(document_id)
                data_key = envelope.open_sealed(old_master, record.wrapped_key, aad)
                sealed = envelope.seal(new_public, data_key, aad, secrets.token_bytes(32), secrets.token_bytes(12))
                del data_key
                rows[document_id] = (e, sealed.model_dump_json())
        return rows

    @activity.defn(name="activate_key_epoch")
    async def activate_key_epoch(self, pending: PendingEpoch) -> KeyEpoch:
        """Make the pending epoch current and retire the old one, in one transaction (idempotent)."""
        e = pending.epoch
        if (existing := await self._epochs.by_key(pending.rotation_id)) is not None:
            return existing
        old = await self._epochs.get(pending.from_epoch)
        if old is None:
            raise InvalidInput(f"{pending.rotation_id}: epoch {pending.from_epoch} is gone")
        await self._store.activate(pending, old.master_public_key)  # its InvalidInput reaches the workflow as is
        return e

    @activity.defn(name="abandon_rotation")
    async def abandon_rotation(self, rotation_id: str) -> None:
        """Forget the rotation key and any pending epoch; the current epoch stays as it was."""
        self._key_file(rotation_id).unlink(missing_ok=True)
        await self._store.abandon(rotation_id)

