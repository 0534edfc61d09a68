"""What guardians and requesters do on their own machine: key files, answering a share request, acknowledging a
rotation, and reconstructing a document's key locally. Nothing here talks to the server; secrets stay here.

A key file (mode 0600) holds a party's X25519 private key (shares are sealed to it) and Ed25519 private key
(submissions are signed with it); the ``.pub`` file next to it is the :class:`Guardian` record to register.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from westworld import envelope, shamir
from westworld.documents import decode_utf8
from westworld.errors import InvalidInput, InvalidShare
from westworld.rotation import Acknowledgement, AckTask, ack_digest, ack_proof
from westworld.shelter import GUARDIAN_ID_PATTERN, EncryptedShare, Guardian, share_aad
from westworld.shelter_access import ShareSubmission, ShareTask, handoff_aad, submission_digest


class PartyKeys(BaseModel):
    """A guardian's or requester's private keys. Never leaves its 0600 file except into this process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=GUARDIAN_ID_PATTERN)
    encryption_private_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    signing_private_key: str = Field(pattern=r"^[0-9a-f]{64}$")

    def __repr__(self) -> str:
        return f"PartyKeys(id={self.id!r}, <private keys hidden>)"

    __str__ = __repr__

    @property
    def x25519(self) -> bytes:
        return bytes.fromhex(self.encryption_private_key)

    def sign(self, message: bytes) -> str:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.signing_private_key)).sign(message).hex()

    def public(self) -> Guardian:
        signing = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.signing_private_key))
        return Guardian(id=self.id, encryption_public_key=envelope.public_key(self.x25519).hex(),
                        signing_public_key=signing.public_key().public_bytes_raw().hex())


def make_keys(party_id: str) -> PartyKeys:
    return PartyKeys(id=party_id, encryption_private_key=secrets.token_bytes(32).hex(),
                     signing_private_key=secrets.token_bytes(32).hex())


def save_keys(keys: PartyKeys, path: Path) -> Path:
    """Write ``path`` (0600, refusing to overwrite) and ``path.pub`` (the public Guardian record)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.model_dump_json())
    pub = path.with_name(path.name + ".pub")
    pub.write_text(keys.public().model_dump_json(indent=2) + "\n")
    return pub


def load_keys(path: Path) -> PartyKeys:
    try:
        return PartyKeys.model_validate_json(decode_utf8(path.read_bytes(), str(path)))
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read key file: {err.strerror}") from err
    except ValidationError as err:
        raise InvalidInput(f"{path}: not a shelter key file (made by `westworld shelter keygen`): "
                           f"{err.errors()[0]['msg']}") from err


def load_guardian(path: Path) -> Guardian:
    """A guardian's public record from a ``.pub`` file (or from a key file)."""
    try:
        data = json.loads(decode_utf8(path.read_bytes(), str(path)))
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{path}: not JSON: {err}") from err
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: not a guardian public key file: expected a JSON object")
    try:
        if "signing_private_key" in data:
            return PartyKeys.model_validate(data).public()
        return Guardian.model_validate(data)
    except ValidationError as err:
        raise InvalidInput(f"{path}: not a guardian public key file: {err.errors()[0]['msg']}") from err


def _open_own_share(keys: PartyKeys, epoch: int, encrypted: EncryptedShare, salt: str) -> shamir.Share:
    value = envelope.open_sealed(keys.x25519, encrypted.sealed, share_aad(epoch, keys.id, encrypted.index))
    share = shamir.Share(index=encrypted.index, value=value)
    shamir.check_shares([share], {encrypted.index: encrypted.commitment}, bytes.fromhex(salt))
    return share


def answer_share(keys: PartyKeys, task: ShareTask) -> ShareSubmission:
    """Open this guardian's share, check it, seal it to the requester (or rotation key) and sign the submission."""
    if task.guardian_id != keys.id:
        raise InvalidInput(f"the task is for guardian {task.guardian_id!r}, the key file is {keys.id!r}'s")
    share = _open_own_share(keys, task.epoch, task.encrypted_share, task.salt)
    sealed = envelope.seal(bytes.fromhex(task.seal_to), share.value, handoff_aad(task.workflow_id, share.index),
                           secrets.token_bytes(32), secrets.token_bytes(12))
    commitment = task.encrypted_share.commitment
    digest = submission_digest(task.workflow_id, task.request_id, share.index, commitment, sealed)
    return ShareSubmission(guardian_id=keys.id, index=share.index, commitment=commitment, sealed=sealed,
                           signature=keys.sign(digest))


def acknowledge(keys: PartyKeys, task: AckTask) -> Acknowledgement:
    """Open the new share, check its commitment, and sign the proof that only its holder can compute."""
    try:
        share = _open_own_share(keys, task.epoch, task.encrypted_share, task.salt)
    except InvalidShare as err:
        raise InvalidShare(f"your new share does not match its commitment; do not acknowledge: {err.message}") from err
    proof = ack_proof(share.value, task.workflow_id, task.epoch, share.index)
    return Acknowledgement(guardian_id=keys.id, proof=proof,
                           signature=keys.sign(ack_digest(task.workflow_id, task.epoch, keys.id, proof)))
