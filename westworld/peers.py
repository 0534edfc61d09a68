"""Peer signatures for wide agent actions and guardian signatures for a resume (pure; Ed25519 via cryptography).

The digest a peer signs is SHA-256 over a domain tag and the canonical JSON of the action: the workflow id and
action id, agent, action, sorted node ids, version and config. Binding the workflow and action ids means a
signature for one action is worthless for any other (no replay across actions), even an identical one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, Field

from westworld.errors import SIGNER_BAD_SIGNATURE, SIGNER_DUPLICATE, SIGNER_UNKNOWN, SignatureRejected

ACTION_DOMAIN = "westworld/agent-action/v1"
RESUME_DOMAIN = "westworld/network-resume/v1"

# Why a signature is refused (also the ApplicationError types of refused updates).
UNKNOWN_SIGNER = SIGNER_UNKNOWN
BAD_SIGNATURE = SIGNER_BAD_SIGNATURE
DUPLICATE_SIGNER = SIGNER_DUPLICATE


class ActionDigestInput(BaseModel):
    workflow_id: str
    action_id: str
    agent_id: str
    action: str
    node_ids: list[str]
    version: str | None = None
    config: dict[str, str] = Field(default_factory=dict)


class SignatureRequest(BaseModel):
    """One peer's (or guardian's) signature: who signs, and the hex Ed25519 signature over the digest."""

    signer_id: str = Field(min_length=1, max_length=128)
    signature: str = Field(min_length=1, max_length=256, description="hex")


def _digest(domain: str, body: dict[str, object]) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{domain}\n{canonical}".encode()).digest()


def action_digest(a: ActionDigestInput) -> bytes:
    body = a.model_dump(mode="json")
    body["node_ids"] = sorted(set(a.node_ids))
    return _digest(ACTION_DOMAIN, body)


def resume_digest(halt_epoch: int, workflow_id: str) -> bytes:
    return _digest(RESUME_DOMAIN, {"halt_epoch": halt_epoch, "workflow_id": workflow_id})


def sign(private_key: bytes, digest: bytes) -> str:
    """Hex signature by the raw 32-byte Ed25519 private key (used by the CLI and tests, never by workers)."""
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(digest).hex()


def public_key_of(private_key: bytes) -> str:
    return Ed25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw).hex()


def verify(public_key_hex: str, digest: bytes, signature_hex: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), digest)
    except (InvalidSignature, ValueError):
        return False
    return True


def validate(req: SignatureRequest, registry: Mapping[str, str], digest: bytes, accepted: Mapping[str, str]) -> None:
    """Refuse a signature from an unregistered signer, a bad signature, or a signer already counted.

    Raises:
        SignatureRejected: with the reason constant and a message naming the signer.
    """
    key = registry.get(req.signer_id)
    if key is None:
        raise SignatureRejected(UNKNOWN_SIGNER, f"{req.signer_id!r} is not a registered signer here")
    if req.signer_id in accepted:
        raise SignatureRejected(DUPLICATE_SIGNER, f"{req.signer_id} has already signed")
    if not verify(key, digest, req.signature):
        raise SignatureRejected(BAD_SIGNATURE, f"the signature of {req.signer_id} does not verify over this digest")
