"""Access to a sheltered document: requests, guardians' share submissions and their checks (pure).

A guardian answers an approved request by decrypting their own share locally, sealing it to the requester's
X25519 key and signing a digest that binds the workflow, the request, the share's index and commitment and the
sealed bytes (so a submission cannot be replayed into another request). The workflow checks each submission
with :func:`check_submission` before accepting it; the requester checks every opened share against its public
commitment before combining.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from westworld import envelope, shamir
from westworld.audit import canonical_json
from westworld.durations import Duration
from westworld.envelope import HEX32, Sealed
from westworld.errors import (
    SHARE_BAD_COMMITMENT,
    SHARE_BAD_SIGNATURE,
    SHARE_DUPLICATE,
    SHARE_NOT_GUARDIAN,
    SHARE_WINDOW_CLOSED,
    DecryptFailed,
    InvalidInput,
    InvalidShare,
    ShareRejected,
)
from westworld.policy import NetworkPolicy, at_least, at_most, vote_terms_in_force
from westworld.shelter import DocumentRecord, EncryptedShare, KeyEpoch, content_aad, data_key_aad
from westworld.vote import DEFAULT_WINDOWS, DaoVoteResult, VoteBackend, VoteKind

REQUEST_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,47}$"


class AccessDecision(StrEnum):
    PENDING = "pending"
    VOTING = "voting"
    COLLECTING = "collecting shares"
    GRANTED = "granted"
    DENIED = "denied"
    EXPIRED = "expired"


class AccessRequest(BaseModel):
    """Who asks for which document, why, and the X25519 key the guardians seal their shares to."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="Business key, e.g. 'report-7-a1b2'.")
    document_id: str = Field(min_length=1, max_length=128)
    requester: str = Field(min_length=1, max_length=128, description="Requester's name (shown to voters).")
    requester_public_key: str = Field(pattern=HEX32, description="Requester's X25519 public key, hex.")
    reason: str = Field(min_length=1, max_length=2000)


class VoteTerms(BaseModel):
    """How the DAO is asked (the child DaoVoteWorkflow's parameters). Quorum, approval threshold and window are the
    network policy's (``NetworkPolicy.votes``); a requester may ask stricter, never looser (refused at start)."""

    model_config = ConfigDict(extra="forbid")

    quorum: Decimal | None = Field(None, gt=0, le=1, description="None: the policy's votes.quorum_min.")
    approval_threshold: Decimal | None = Field(None, ge=0, lt=1,
                                               description="None: the policy's votes.approval_threshold_min.")
    backend: VoteBackend = VoteBackend.OFFCHAIN
    voting_window: Duration | None = Field(None, description="Default 72 h (normal) or the emergency window, inside "
                                           "the policy's votes.window_min..window_max.")


class DocumentAccessInput(BaseModel):
    """Input of ``DocumentAccessWorkflow`` (id ``access:<request_id>``)."""

    model_config = ConfigDict(extra="forbid")

    request: AccessRequest
    vote: VoteTerms = Field(default_factory=VoteTerms)
    share_window: Duration = Field(timedelta(days=7), description="After approval: time for k guardians (at most "
                                   "the policy's shelter.share_window_max).")
    reminder_every: Duration = Field(timedelta(days=1), description="Remind guardians who have not answered (at "
                                     "least the policy's shelter.reminder_every_min).")


class EmergencyAccessInput(BaseModel):
    """Input of ``EmergencyAccessWorkflow`` (id ``emergency:<request_id>``)."""

    model_config = ConfigDict(extra="forbid")

    request: AccessRequest
    window: Duration = Field(timedelta(hours=2), description="From request to expiry (expiry means denied); at "
                             "most the policy's shelter.emergency_window_max.")
    vote: VoteTerms = Field(default_factory=VoteTerms)
    reminder_every: Duration = Field(timedelta(minutes=10), description="Remind guardians who have not answered (at "
                                     "least the policy's shelter.reminder_every_min).")


def access_terms(policy: NetworkPolicy, where: str, vote: VoteTerms, kind: VoteKind, *, reminder_every: timedelta,
                 share_window: timedelta | None = None, window: timedelta | None = None) -> VoteTerms:
    """The vote terms an access request runs under, checked against the network policy before anything is done.

    Quorum, approval threshold and voting window are the policy's unless the requester asked stricter; the share
    window (normal) or the emergency window may not be longer than the policy allows, nor reminders more frequent.

    Raises:
        WestworldError: type ``LooserThanPolicy``; the message names the field, the value and the policy's limit.
    """
    shelter = policy.shelter
    at_least(where, "reminder_every", reminder_every, "shelter.reminder_every_min", shelter.reminder_every_min)
    if share_window is not None:
        at_most(where, "share_window", share_window, "shelter.share_window_max", shelter.share_window_max)
    if window is not None:
        at_most(where, "window", window, "shelter.emergency_window_max", shelter.emergency_window_max)
    default = window if kind is VoteKind.EMERGENCY and window is not None else DEFAULT_WINDOWS[kind]
    terms = vote_terms_in_force(policy.votes, where, quorum=vote.quorum, approval_threshold=vote.approval_threshold,
                                window=vote.voting_window, default_window=default)
    return VoteTerms(quorum=terms.quorum, approval_threshold=terms.approval_threshold, backend=vote.backend,
                     voting_window=terms.window)


class ShareSubmission(BaseModel):
    """A guardian's share, sealed to the requester (or to a rotation key), signed with the guardian's key."""

    model_config = ConfigDict(extra="forbid")

    guardian_id: str
    index: int = Field(ge=1, le=255)
    commitment: str
    sealed: Sealed
    signature: str = Field(description="Ed25519 signature (hex) over submission_digest(...).")


class ShareTask(BaseModel):
    """What a guardian needs to answer: their encrypted share and whom to seal it to."""

    workflow_id: str
    request_id: str
    guardian_id: str
    epoch: int
    encrypted_share: EncryptedShare
    seal_to: str = Field(description="X25519 public key (hex) the share must be sealed to.")
    salt: str
    submitted: bool


class AccessState(BaseModel):
    """The ``status`` query of both access workflows."""

    request: AccessRequest
    kind: str
    decision: AccessDecision
    step: str
    deadline: datetime | None
    epoch: int | None
    threshold: int | None
    submitted: list[str] = Field(description="Guardian ids whose shares were accepted.")
    waiting_for: list[str] = Field(description="Guardians of the epoch who have not answered.")
    vote_decision: str | None = None


class AccessResult(BaseModel):
    """What the requester opens with: the shares sealed to them (safe to keep: only their key opens them)."""

    request: AccessRequest
    kind: str
    decision: AccessDecision
    reason: str
    epoch: int | None = None
    threshold: int | None = None
    salt: str | None = None
    master_public_key: str | None = None
    commitments: dict[int, str] = Field(default_factory=dict)
    document: DocumentRecord | None = None
    shares: list[ShareSubmission] = Field(default_factory=list)
    vote: DaoVoteResult | None = None
    audit_seq: int = -1


def handoff_aad(workflow_id: str, index: int) -> bytes:
    """Associated data of a share a guardian seals to a requester or a rotation key for one workflow."""
    return f"westworld/shelter/handoff/v1|{workflow_id}|index={index}".encode()


def sealed_digest(sealed: Sealed) -> str:
    return hashlib.sha256(canonical_json(sealed.model_dump(mode="json")).encode()).hexdigest()


def submission_digest(workflow_id: str, request_id: str, index: int, commitment: str, sealed: Sealed) -> bytes:
    """What a guardian signs: binds the workflow, the request, the share and the exact sealed bytes."""
    body = {"domain": "westworld-share-v1", "workflow_id": workflow_id, "request_id": request_id,
            "index": index, "commitment": commitment, "sealed_sha256": sealed_digest(sealed)}
    return hashlib.sha256(canonical_json(body).encode()).digest()


def verify_signature(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_submission(sub: ShareSubmission, epoch: KeyEpoch, workflow_id: str, request_id: str,
                     accepted: Collection[str], now: datetime, deadline: datetime | None) -> None:
    """Refuse a submission that is not a registered guardian's own share, matching the published commitment,
    signed by that guardian for this request, new, and inside the window.

    Raises:
        ShareRejected: ``type`` names the reason; the message names the guardian and the share.
    """
    where = f"share {sub.index} from {sub.guardian_id!r} for {request_id}"
    if deadline is not None and now >= deadline:
        raise ShareRejected(f"{where}: the window closed at {deadline.isoformat()}", type=SHARE_WINDOW_CLOSED)
    guardian = epoch.guardian(sub.guardian_id)
    own = epoch.share_of(sub.guardian_id)
    if guardian is None or own is None:
        raise ShareRejected(f"{where}: {sub.guardian_id!r} is not a guardian of key epoch {epoch.epoch}",
                            type=SHARE_NOT_GUARDIAN)
    if own.index != sub.index:
        raise ShareRejected(f"{where}: {sub.guardian_id!r} holds share {own.index}, not {sub.index}",
                            type=SHARE_NOT_GUARDIAN)
    if sub.guardian_id in accepted:
        raise ShareRejected(f"{where}: {sub.guardian_id!r} already submitted", type=SHARE_DUPLICATE)
    if sub.commitment != own.commitment:
        raise ShareRejected(f"{where}: commitment {sub.commitment[:16]}… does not match the published "
                            f"{own.commitment[:16]}… of epoch {epoch.epoch}", type=SHARE_BAD_COMMITMENT)
    digest = submission_digest(workflow_id, request_id, sub.index, sub.commitment, sub.sealed)
    if not verify_signature(guardian.signing_public_key, digest, sub.signature):
        raise ShareRejected(f"{where}: the signature is not {sub.guardian_id!r}'s over this request and share",
                            type=SHARE_BAD_SIGNATURE)


def reconstruct_master_key(recipient_private: bytes, result: AccessResult, workflow_id: str) -> bytes:
    """Open the shares sealed to the requester, check each against its published commitment (naming any wrong
    one) BEFORE combining, combine k of them and check the key against the epoch's master public key.

    Raises:
        DecryptFailed: a share was not sealed to this key (or was altered).
        InvalidShare: a share does not match its commitment, repeats, or too few shares.
    """
    if result.decision is not AccessDecision.GRANTED or result.salt is None or result.threshold is None:
        raise InvalidInput(f"request {result.request.request_id} was not granted ({result.decision.value}: "
                           f"{result.reason})")
    shares = []
    for sub in result.shares:
        try:
            value = envelope.open_sealed(recipient_private, sub.sealed, handoff_aad(workflow_id, sub.index))
        except DecryptFailed as err:
            raise DecryptFailed(f"share {sub.index} from {sub.guardian_id!r}: {err.message}") from err
        shares.append(shamir.Share(index=sub.index, value=value))
    shamir.check_shares(shares, result.commitments, bytes.fromhex(result.salt))
    master = shamir.combine(shares, result.threshold)
    if result.master_public_key and envelope.public_key(master).hex() != result.master_public_key:
        raise InvalidShare(f"the {len(shares)} shares combine to a key that is not epoch {result.epoch}'s master key",
                           indexes=tuple(s.index for s in shares))
    return master


def open_document(master: bytes, document: DocumentRecord, blob: bytes) -> bytes:
    """Unwrap the document's data key with the master key, check the ciphertext's hash, decrypt it.

    Raises:
        DecryptFailed: the ciphertext's hash differs from the index, or it does not authenticate.
    """
    digest = hashlib.sha256(blob).hexdigest()
    if digest != document.ciphertext_sha256:
        raise DecryptFailed(f"document {document.document_id}: the fetched ciphertext's SHA-256 {digest[:16]}… is "
                            f"not the indexed {document.ciphertext_sha256[:16]}… (tampered or wrong replica)")
    data_key = envelope.open_sealed(master, document.wrapped_key, data_key_aad(document.document_id))
    return envelope.decrypt_blob(data_key, blob, content_aad(document.document_id))
