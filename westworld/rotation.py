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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.audit import canonical_json
from westworld.durations import Duration
from westworld.errors import (
    LOOSER_THAN_POLICY,
    SHARE_BAD_PROOF,
    SHARE_BAD_SIGNATURE,
    SHARE_DUPLICATE,
    SHARE_NOT_GUARDIAN,
    UNAUTHORISED,
    InvalidInput,
    PermanentError,
    ShareRejected,
    TooFewGuardians,
)
from westworld.policy import NetworkPolicy, at_least, at_most, refuse_looser, vote_terms_in_force
from westworld.shelter import EncryptedShare, Guardian, KeyEpoch
from westworld.shelter_access import ShareSubmission, verify_signature
from westworld.vote import DEFAULT_WINDOWS, DaoVoteInput, Proposal, VoteKind


class GuardianRotationInput(BaseModel):
    """Input of ``GuardianRotationWorkflow`` (id ``rotation:<current epoch>``; the schedule starts it with ``{}``)."""

    model_config = ConfigDict(extra="forbid")

    new_guardians: list[Guardian] | None = Field(
        None, description="The new set; empty means the set registered with `shelter rotate --next`, else the "
        "current set (fresh shares for the same guardians).")
    threshold: int | None = Field(None, ge=2, description="Not the starter's to choose: k of the new epoch is the "
                                  "current k, or the policy's shelter.guardian_threshold_min if higher; a value "
                                  "that differs is refused.")
    rotate_master_key: bool = Field(False, description="Also make a new master key and re-wrap every data key.")
    share_window: Duration = Field(timedelta(days=14), description="For k current guardians to hand in shares "
                                   "(at most the policy's shelter.rotation_window_max).")
    ack_window: Duration = Field(timedelta(days=14), description="For the new guardians to acknowledge (at most "
                                 "the policy's shelter.rotation_window_max).")
    ack_quorum: int | None = Field(None, ge=1, description="Acknowledgements needed; default: every new guardian; "
                                   "never fewer than the new k.")
    reminder_every: Duration = Field(timedelta(days=1), description="Remind guardians who have not answered (at "
                                     "least the policy's shelter.reminder_every_min).")
    remove_guardians: list[str] = Field(default_factory=list, description="The new set is the current one less "
                                        "these guardians (`westworld shelter guardians remove`): a guardian leaves "
                                        "only through a rotation, and the DAO votes on the smaller set first.")

    @model_validator(mode="after")
    def _one_new_set(self) -> GuardianRotationInput:
        if self.remove_guardians and self.new_guardians is not None:
            raise ValueError("give new_guardians or remove_guardians, not both")
        return self


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
    VOTING = "voting"  # a new guardian set waits for the DAO's approval
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
    threshold: int | None = None
    new_guardians: list[str] = Field(default_factory=list)
    vote_id: str | None = Field(None, description="The DAO vote on a new guardian set (workflow id), if one runs.")
    vote_decision: str | None = None


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


def rotation_threshold(policy: NetworkPolicy, where: str, inp: GuardianRotationInput, current: KeyEpoch) -> int:
    """k of the new epoch: the current epoch's, or the policy's floor if that is higher; never the starter's.

    Also checks what else the starter sends against the policy (windows, reminders, acknowledgements needed).

    Raises:
        PermanentError: type ``LooserThanPolicy`` naming the field and the limit in force (``Unauthorised`` for a
            k above the one in force: only the DAO raises it, through the policy).
    """
    shelter = policy.shelter
    k = max(current.threshold, shelter.guardian_threshold_min)
    if inp.threshold is not None and inp.threshold != k:
        raise PermanentError(
            f"{where}: threshold {inp.threshold} is not the starter's to choose: k of the new epoch is {k} (key "
            f"epoch {current.epoch}'s k, or the network policy's shelter.guardian_threshold_min if higher); leave "
            "threshold out", type=LOOSER_THAN_POLICY if inp.threshold < k else UNAUTHORISED)
    at_most(where, "share_window", inp.share_window, "shelter.rotation_window_max", shelter.rotation_window_max)
    at_most(where, "ack_window", inp.ack_window, "shelter.rotation_window_max", shelter.rotation_window_max)
    at_least(where, "reminder_every", inp.reminder_every, "shelter.reminder_every_min", shelter.reminder_every_min)
    if inp.ack_quorum is not None and inp.ack_quorum < k:
        refuse_looser(where, "ack_quorum", inp.ack_quorum, "the new epoch's k: fewer could activate an epoch "
                      "nobody can open", k)
    return k


def enough_guardians(where: str, k: int, guardians: list[Guardian], what: str = "the new guardian set") -> None:
    """Refuse a set the key cannot be split among k-of-n (n < k) before any vote runs or share is asked for.

    Raises:
        TooFewGuardians: naming the set's size, k, and where k comes from.
    """
    if len(guardians) < k:
        raise TooFewGuardians(
            f"{where}: {what} has {len(guardians)} guardian{'s' if len(guardians) != 1 else ''} but the key is "
            f"split {k}-of-n (k is the current key epoch's, or the network policy's shelter.guardian_threshold_min "
            f"if higher): list at least {k} guardians")


def without_guardians(where: str, current: KeyEpoch, removed: list[str]) -> list[Guardian]:
    """The current epoch's guardians less ``removed``; every removed id must be one of them.

    Raises:
        InvalidInput: naming the ids that are not guardians of the epoch, and who are.
    """
    ids = [g.id for g in current.guardians]
    if unknown := sorted(set(removed) - set(ids)):
        raise InvalidInput(f"{where}: remove_guardians: {', '.join(unknown)} not a guardian of key epoch "
                           f"{current.epoch} (its guardians: {', '.join(ids)})")
    return [g for g in current.guardians if g.id not in set(removed)]


def changes_guardians(plan: RotationPlan) -> bool:
    """Whether the plan hands the key to anyone who does not hold a share of it now (or drops someone who does)."""
    return set(plan.new_guardians) != set(plan.from_epoch.guardians)


def guardian_vote_input(policy: NetworkPolicy, plan: RotationPlan, proposal_id: str) -> DaoVoteInput:
    """The DAO vote a new guardian set needs (the policy's terms; nobody who starts a rotation picks them)."""
    terms = vote_terms_in_force(policy.votes, proposal_id, quorum=None, approval_threshold=None, window=None,
                                default_window=DEFAULT_WINDOWS[VoteKind.NORMAL])
    n = len(plan.new_guardians)
    listing = "\n".join(f"- {g.id} (signing key {g.signing_public_key[:16]}…)" for g in plan.new_guardians)
    return DaoVoteInput(
        proposal=Proposal(
            id=proposal_id,
            title=f"Move the shelter key from epoch {plan.from_epoch.epoch} to a new guardian set "
                  f"({plan.threshold}-of-{n})",
            body=f"Rotation {plan.rotation_id}. If approved, {plan.threshold} current guardians hand in their "
                 f"shares and the master key is re-split {plan.threshold}-of-{n} among:\n{listing}",
        ),
        kind=VoteKind.NORMAL, voting_window=terms.window, quorum=terms.quorum,
        approval_threshold=terms.approval_threshold,
    )
