"""Models of the shelter: key epochs with their guardians and sealed shares, and replicated encrypted documents.

Everything here is public: it may sit in workflow history and the database. Key material (the master private
key, clear shares, data keys) never appears in these models; only sealed boxes and commitments do.

Associated data (``*_aad``) binds every sealed box to its purpose, so a box cannot be replayed elsewhere: a
share sealed for guardian g in epoch e does not open as another guardian's share or another epoch's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.audit import canonical_json
from westworld.durations import Duration
from westworld.envelope import HEX32, Sealed, decrypt_blob, open_sealed
from westworld.errors import UNAUTHORISED, DecryptFailed, PermanentError

GUARDIAN_ID_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
DOCUMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
DEFAULT_THRESHOLD = 3
MASTER_KEY_BYTES = 32


def share_aad(epoch: int, guardian_id: str, index: int) -> bytes:
    """Associated data of a share sealed to its guardian."""
    return f"westworld/shelter/share/v1|epoch={epoch}|guardian={guardian_id}|index={index}".encode()


def data_key_aad(document_id: str) -> bytes:
    """Associated data of a document's data key wrapped to the master public key."""
    return f"westworld/shelter/data-key/v1|document={document_id}".encode()


def content_aad(document_id: str) -> bytes:
    """Associated data of a document's content ciphertext (AES-256-GCM with its data key)."""
    return f"westworld/shelter/content/v1|document={document_id}".encode()


class Guardian(BaseModel):
    """A key holder: shares are sealed to ``encryption_public_key``; ``signing_public_key`` authenticates them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=GUARDIAN_ID_PATTERN)
    encryption_public_key: str = Field(pattern=HEX32, description="hex X25519 public key")
    signing_public_key: str = Field(pattern=HEX32, description="hex Ed25519 public key")


class EncryptedShare(BaseModel):
    """One guardian's share, sealed to the guardian, with its public commitment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guardian_id: str = Field(pattern=GUARDIAN_ID_PATTERN)
    index: int = Field(ge=1, le=255)
    commitment: str = Field(pattern=HEX32)
    sealed: Sealed


class KeyEpoch(BaseModel):
    """One generation of the master key: its public key, threshold, guardians and their sealed shares."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    threshold: int = Field(ge=2)
    master_public_key: str = Field(pattern=HEX32)
    salt: str = Field(pattern=HEX32, description="hex salt of the share commitments")
    guardians: list[Guardian]
    shares: list[EncryptedShare]
    created_at: datetime
    retired: bool = False
    epoch_key: str | None = None

    def commitments(self) -> dict[int, str]:
        """Share index -> commitment, the argument :func:`westworld.shamir.check_shares` takes."""
        return {s.index: s.commitment for s in self.shares}

    def share_of(self, guardian_id: str) -> EncryptedShare | None:
        return next((s for s in self.shares if s.guardian_id == guardian_id), None)

    def guardian(self, guardian_id: str) -> Guardian | None:
        return next((g for g in self.guardians if g.id == guardian_id), None)


class CeremonyApproval(BaseModel):
    """A current guardian's Ed25519 signature over :func:`ceremony_digest` of a new ceremony."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guardian_id: str = Field(pattern=GUARDIAN_ID_PATTERN)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="hex Ed25519 signature")


class CreateEpochInput(BaseModel):
    """Create a key epoch: a new master key split ``threshold``-of-``len(guardians)`` (default 3-of-10).

    The first (genesis) ceremony needs no approvals; once a key epoch exists, a ceremony needs ``approvals`` from
    k of the current epoch's guardians (:func:`check_ceremony`); otherwise new guardians come only by rotation.
    """

    model_config = ConfigDict(extra="forbid")

    guardians: list[Guardian] = Field(min_length=2, max_length=255)
    threshold: int = Field(DEFAULT_THRESHOLD, ge=2)
    epoch_key: str | None = Field(
        None, max_length=128, description="idempotency key: a retried creation with the same key returns the "
        "epoch it created (e.g. the rotation workflow's id)")
    approvals: list[CeremonyApproval] = Field(
        default_factory=list, max_length=255, description="signatures of the current epoch's guardians over "
        "ceremony_digest(guardians, threshold, epoch_key); not needed for the genesis ceremony")

    @model_validator(mode="after")
    def _check(self) -> CreateEpochInput:
        n = len(self.guardians)
        if self.threshold > n:
            raise ValueError(f"threshold {self.threshold} exceeds the {n} guardians given")
        for field in ("id", "encryption_public_key", "signing_public_key"):
            values = [getattr(g, field) for g in self.guardians]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"guardian {field} repeated: {dup}")
        return self


class KeyEpochStatus(BaseModel):
    """What a ceremony is checked against: the current epoch (if any), the highest epoch number (0: none), and the
    epoch this ceremony's ``epoch_key`` already created (a retried ceremony returns it unchecked)."""

    current: KeyEpoch | None = None
    latest: int = Field(0, ge=0)
    created: KeyEpoch | None = None


def ceremony_digest(guardians: list[Guardian], threshold: int, epoch_key: str) -> bytes:
    """What a current guardian signs to approve a new ceremony: the new guardians (ids and keys), k, epoch key."""
    body = {"domain": "westworld-key-ceremony-v1", "epoch_key": epoch_key, "threshold": threshold,
            "guardians": [g.model_dump(mode="json") for g in guardians]}
    return hashlib.sha256(canonical_json(body).encode()).digest()


def _verifies(public_key_hex: str, digest: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(bytes.fromhex(signature_hex), digest)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_ceremony(inp: CreateEpochInput, epoch_key: str, current: KeyEpoch | None,
                   any_epoch: bool) -> list[str]:
    """Allow a ceremony: the genesis one while no key epoch exists, later ones only with k current guardians'
    signatures over :func:`ceremony_digest`. Approvals by others, bad or repeated ones never count.

    Returns:
        the current guardians whose approvals counted (empty for the genesis ceremony).

    Raises:
        PermanentError: type ``UNAUTHORISED``; the message says why and how new guardians come instead.
    """
    if current is None and not any_epoch:
        return []
    how = ("new guardian sets come only through a rotation (`westworld shelter rotate`, approved by a DAO vote and "
           "k current guardians)")
    if current is None:
        raise PermanentError(f"key epochs exist but none is current: {how}", type=UNAUTHORISED)
    digest = ceremony_digest(inp.guardians, inp.threshold, epoch_key)
    valid: set[str] = set()
    ignored: list[str] = []
    for a in inp.approvals:
        g = current.guardian(a.guardian_id)
        if g is None:
            ignored.append(f"{a.guardian_id!r} is not a guardian of key epoch {current.epoch}")
        elif not _verifies(g.signing_public_key, digest, a.signature):
            ignored.append(f"{a.guardian_id!r}'s signature is not over this ceremony")
        else:
            valid.add(a.guardian_id)
    if len(valid) >= current.threshold:
        return sorted(valid)
    why = f"; ignored: {'; '.join(ignored)}" if ignored else ""
    raise PermanentError(
        f"key ceremony {epoch_key!r} refused: key epoch {current.epoch} exists, so {how}, or a ceremony signed by "
        f"{current.threshold} of its guardians ({len(valid)} valid approval(s){why})", type=UNAUTHORISED)


class Network(StrEnum):
    IPFS = "ipfs"
    ARWEAVE = "arweave"
    SIA = "sia"


class ReplicaState(StrEnum):
    OK = "ok"
    MISSING = "missing"  # the network answers but no longer has the content
    CORRUPTED = "corrupted"  # the network returns bytes whose SHA-256 differs
    UNREACHABLE = "unreachable"  # the network did not answer
    NOT_CONFIGURED = "not_configured"  # no endpoint configured for this network (e.g. no renterd)


class ReplicaRef(BaseModel):
    """Where one replica of a document's ciphertext lives and what the last read-back found."""

    model_config = ConfigDict(extra="forbid")

    network: Network
    locator: str = Field(description="IPFS CID, Arweave transaction id or Sia object path; empty if not stored")
    sha256: str = Field(description="hex SHA-256 of the bytes read back")
    verified_at: datetime | None = None
    ok: bool
    state: ReplicaState = ReplicaState.OK
    detail: str = ""


class EncryptedDocument(BaseModel):
    """A document once encrypted: its wrapped data key and the ciphertext's identity (no key material)."""

    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN)
    title: str = Field(max_length=256)
    key_epoch: int = Field(ge=1)
    wrapped_key: Sealed
    ciphertext_sha256: str = Field(pattern=HEX32)
    size: int = Field(ge=0, description="ciphertext bytes")
    plaintext_size: int = Field(ge=0)


class DocumentRecord(EncryptedDocument):
    """The index row of a document: its encrypted form and its replicas."""

    replicas: list[ReplicaRef] = Field(default_factory=list)
    created_at: datetime | None = None

    def good_replicas(self) -> list[ReplicaRef]:
        return [r for r in self.replicas if r.ok]


class EncryptDocumentInput(BaseModel):
    """Encrypt the staged plaintext of ``document_id`` under the current key epoch."""

    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN)
    title: str = Field("", max_length=256)


class StoreDocumentInput(BaseModel):
    """Store a document whose plaintext the CLI staged at ``<data dir>/shelter/staging/<document_id>`` (mode 0600).

    The plaintext never enters workflow history: the encrypt activity reads the staging file and deletes it.
    """

    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN)
    title: str = Field("", max_length=256)
    networks: list[Network] = Field(default_factory=lambda: [Network.IPFS, Network.ARWEAVE, Network.SIA],
                                    min_length=1)
    min_good_replicas: int = Field(1, ge=1, description="fewer verified replicas than this fail the store")
    replicate_timeout: Duration = Field(timedelta(minutes=5), description="per network, per attempt")
    replicate_attempts: int = Field(8, ge=1, le=100, description="attempts per network before it is recorded as "
                                    "unreachable (backoff 1 s doubling to 30 s)")
    encrypt_timeout: Duration = Field(timedelta(minutes=2))


class StoreStep(StrEnum):
    ENCRYPTING = "encrypting"
    REPLICATING = "replicating"
    INDEXING = "indexing"
    DONE = "done"
    FAILED = "failed"


class StoreDocumentState(BaseModel):
    """What the ``status`` query of StoreDocumentWorkflow returns."""

    document_id: str
    step: StoreStep
    ciphertext_sha256: str | None = None
    replicas: list[ReplicaRef] = Field(default_factory=list)
    error: str | None = None


class ReplicateInput(BaseModel):
    """Copy one document's ciphertext (from the local cache) to one network and read it back."""

    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN)
    ciphertext_sha256: str = Field(pattern=HEX32)
    network: Network


class RepairInput(BaseModel):
    """Re-create one document's replica on ``network`` from any good copy."""

    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN)
    network: Network


class ReplicaAuditInput(BaseModel):
    """Re-verify every replica of every document (or of ``document_ids``) and repair lost or corrupted ones."""

    model_config = ConfigDict(extra="forbid")

    document_ids: list[str] | None = None
    repair: bool = True
    activity_timeout: Duration = Field(timedelta(minutes=5))


class ReplicaFinding(BaseModel):
    document_id: str
    network: Network
    state: ReplicaState
    repaired: bool = False
    detail: str = ""


class ReplicaAuditResult(BaseModel):
    documents: int
    replicas_checked: int
    findings: list[ReplicaFinding] = Field(default_factory=list)

    @property
    def unrepaired(self) -> list[ReplicaFinding]:
        return [f for f in self.findings if not f.repaired]


def open_document(master_private: bytes, document: EncryptedDocument, blob: bytes) -> bytes:
    """The plaintext of ``document`` from its ciphertext ``blob`` and the epoch's master private key.

    Raises:
        DecryptFailed: the blob is not the indexed ciphertext (hash differs: tampered or wrong replica), the key
            is not the document's epoch key, or the ciphertext does not authenticate.
    """
    digest = hashlib.sha256(blob).hexdigest()
    if digest != document.ciphertext_sha256:
        raise DecryptFailed(f"ciphertext of document {document.document_id} has SHA-256 {digest}, the index says "
                            f"{document.ciphertext_sha256}: it was tampered with or is another document's")
    data_key = open_sealed(master_private, document.wrapped_key, data_key_aad(document.document_id))
    return decrypt_blob(data_key, blob, content_aad(document.document_id))
