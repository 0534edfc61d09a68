"""Guardian rotation: models and the acknowledgement proof (pure).

A rotation moves the master key to a new guardian set (or refreshes the shares of the same set): k current
guardians hand in their shares sealed to a one-time rotation key, an activity re-splits the key with fresh
randomness and seals each new share to its new guardian, and each new guardian acknowledges by proving they
could open theirs. The proof is ``HMAC-SHA256(key=share value, msg=rotation, epoch, index)``: only someone who
opened the share can compute it; the workflow holds just its SHA-256 and checks the guardian's signature over it.
Only when the acknowledgements are in does the new epoch become current and the old one retire.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from westworld.audit import canonical_json
from westworld.errors import SHARE_BAD_PROOF, SHARE_BAD_SIGNATURE, SHARE_DUPLICATE, SHARE_NOT_GUARDIAN, ShareRejected
from westworld.shelter import EncryptedShare, Guardian, KeyEpoch
from westworld.shelter_access import ShareSubmission, verify_signature


class GuardianRotationInput(BaseModel):
    """Input of ``GuardianRotationWorkflow`` (id ``rotation:<current epoch>``; the schedule starts it with ``{}``)."""

    model_config = ConfigDict(extra="forbid")

    new_guardians: list[Guardian] | None = Field(
        None, description="The new set; empty means the set registered with `shelter rotate --next`, else the "
        "current set (fresh shares for the same guardians).")
    threshold: int | None = Field(None, ge=2, description="k of the new epoch; default: the current k.")
    rotate_master_key: bool = Field(False, description="Also make a new master key and re-wrap every data key.")
    share_window: timedelta = Field(timedelta(days=14), description="For k current guardians to hand in shares.")
    ack_window: timedelta = Field(timedelta(days=14), description="For the new guardians to acknowledge.")
    ack_quorum: int | None = Field(None, ge=1, description="Acknowledgements needed; default: every new guardian.")
    reminder_every: timedelta = Field(timedelta(days=1), description="Remind guardians who have not answered.")


class BeginRotationInput(BaseModel):
    rotation_id: str
    new_guardians: list[Guardian] | None = None
    threshold: int | None = None


class RotationPlan(BaseModel):
    """What ``begin_rotation`` decided: from which epoch, to which guardians, and the key to hand shares to."""

    rotation_id: str
    from_epoch: KeyEpoch
    new_guardians: list[Guardian]
    threshold: int
    rotation_public_key: str


class ReshareInput(BaseModel):
    plan: RotationPlan
    shares: list[ShareSubmission]
    rotate_master_key: bool = False


class PendingEpoch(BaseModel):
    """The new epoch before activation: public shares plus the hash of each guardian's acknowledgement proof."""

    rotation_id: str
    epoch: KeyEpoch
    from_epoch: int
    ack_hashes: dict[str, str]
    rewrapped_documents: int = 0
    master_key_rotated: bool = False


class Acknowledgement(BaseModel):
    """A new guardian's proof that they opened their share, signed with their Ed25519 key."""

    model_config = ConfigDict(extra="forbid")

    guardian_id: str
    proof: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str


class AckTask(BaseModel):
    """What a new guardian needs to acknowledge: their sealed share in the pending epoch."""

    workflow_id: str
    guardian_id: str
    epoch: int
    encrypted_share: EncryptedShare
    salt: str
    acknowledged: bool


class RotationPhase(StrEnum):
    PLANNING = "planning"
    COLLECTING = "collecting shares"
    RESHARING = "resharing"
    ACKNOWLEDGING = "acknowledging"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


class RotationState(BaseModel):
    phase: RotationPhase
    step: str
    from_epoch: int | None
    new_epoch: int | None
    shares_in: list[str]
    shares_needed: int
    acknowledged: list[str]
    acks_needed: int
    waiting_for: list[str]


class RotationResult(BaseModel):
    phase: RotationPhase
    reason: str
    from_epoch: int | None
    new_epoch: int | None
    guardians: list[str]
    master_key_rotated: bool = False
    rewrapped_documents: int = 0
    audit_seq: int = -1


def ack_proof(share_value: bytes, workflow_id: str, epoch: int, index: int) -> str:
    msg = f"westworld/shelter/ack/v1|{workflow_id}|epoch={epoch}|index={index}".encode()
    return hmac.new(share_value, msg, hashlib.sha256).hexdigest()


def ack_hash(proof: str) -> str:
    return hashlib.sha256(bytes.fromhex(proof)).hexdigest()


def ack_digest(workflow_id: str, epoch: int, guardian_id: str, proof: str) -> bytes:
    body = {"domain": "westworld-ack-v1", "workflow_id": workflow_id, "epoch": epoch, "guardian_id": guardian_id,
            "proof": proof}
    return hashlib.sha256(canonical_json(body).encode()).digest()


def check_ack(ack: Acknowledgement, pending: PendingEpoch, workflow_id: str, acknowledged: set[str]) -> None:
    """Refuse an acknowledgement from outside the new set, a repeat, a wrong proof or a bad signature."""
    where = f"acknowledgement from {ack.guardian_id!r} for epoch {pending.epoch.epoch}"
    guardian = pending.epoch.guardian(ack.guardian_id)
    if guardian is None or ack.guardian_id not in pending.ack_hashes:
        raise ShareRejected(f"{where}: not a guardian of the new epoch", type=SHARE_NOT_GUARDIAN)
    if ack.guardian_id in acknowledged:
        raise ShareRejected(f"{where}: already acknowledged", type=SHARE_DUPLICATE)
    if not hmac.compare_digest(ack_hash(ack.proof), pending.ack_hashes[ack.guardian_id]):
        raise ShareRejected(f"{where}: the proof does not come from this guardian's share", type=SHARE_BAD_PROOF)
    if not verify_signature(guardian.signing_public_key, ack_digest(workflow_id, pending.epoch.epoch,
                                                                    ack.guardian_id, ack.proof), ack.signature):
        raise ShareRejected(f"{where}: the signature is not {ack.guardian_id!r}'s", type=SHARE_BAD_SIGNATURE)
