"""Trusted heads of the audit log: heads the worker signed, and roots anchored on chain (pure models and checks).

A head someone trusts is a (tree size, root) pair kept *apart* from the log, so whoever can rewrite the log's
table cannot rewrite it too:

- a **signed head**: after every append the worker signs (size, root, time) with an Ed25519 key kept in its own
  file and appends the signed head to a separate append-only file (``activities/audit_heads.py``);
- an **anchored head**: every hour :class:`workflows.audit_anchor.AuditAnchorWorkflow` sends (log key, size,
  root) as the calldata of a zero-value transaction from the relayer to itself, read back from the chain here.

The log key (the signing key's public half) is part of the anchor, so several logs anchored by one relayer (or
the test chain) stay apart.
"""

from __future__ import annotations

import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, Field

ANCHOR_PREFIX = b"westworld-audit-root:"
ANCHOR_PREFIX_V2 = b"westworld-audit-root:v2:"
HEAD_CONTEXT = b"westworld-audit-head:v1\n"


class LogHead(BaseModel):
    ok: bool
    tree_size: int
    root: str
    problems: list[str] = []
    log_key: str = Field("", description="Hex Ed25519 public key of the log's signed heads ('' for none).")


class AnchorResult(BaseModel):
    tree_size: int
    root: str
    tx_hash: str | None
    audit_seq: int | None


class SignedHead(BaseModel):
    """A head the worker signed right after an append: ``signature`` is over :func:`head_message`."""

    tree_size: int = Field(ge=0)
    root: str
    signed_at: str
    key: str = Field(description="Hex Ed25519 public key that signed.")
    signature: str


class HeadLine(BaseModel):
    """One line of the signed-heads file: the head, or why the line cannot be read."""

    line: int
    head: SignedHead | None = None
    error: str | None = None


class AnchoredHead(BaseModel):
    """A (size, root) read from an anchoring transaction on chain."""

    tree_size: int
    root: str
    log_key: str
    tx_hash: str
    block: int


def head_message(tree_size: int, root: str, signed_at: str) -> bytes:
    """The bytes a signed head's signature covers (a context prefix, then sorted-key JSON)."""
    body = json.dumps({"root": root, "signed_at": signed_at, "tree_size": tree_size}, sort_keys=True,
                      separators=(",", ":"))
    return HEAD_CONTEXT + body.encode()


def head_signature_ok(head: SignedHead, public_key: str) -> bool:
    """Whether ``head`` was signed by ``public_key`` (hex) over its own size, root and time."""
    if head.key != public_key:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        key.verify(bytes.fromhex(head.signature), head_message(head.tree_size, head.root, head.signed_at))
    except (InvalidSignature, ValueError):
        return False
    return True


def anchor_payload(tree_size: int, root_hex: str, log_key: str = "") -> bytes:
    """Calldata of an anchoring transaction: a prefix, [the 32-byte log key,] the size as 8 bytes, the root."""
    if log_key:
        return ANCHOR_PREFIX_V2 + bytes.fromhex(log_key) + tree_size.to_bytes(8, "big") + bytes.fromhex(root_hex)
    return ANCHOR_PREFIX + tree_size.to_bytes(8, "big") + bytes.fromhex(root_hex)


def parse_anchor(data: bytes) -> tuple[int, str, str] | None:
    """(tree size, root, log key) of anchoring calldata (log key '' in the first format), or None."""
    if data.startswith(ANCHOR_PREFIX_V2) and len(data) == len(ANCHOR_PREFIX_V2) + 72:
        body = data[len(ANCHOR_PREFIX_V2):]
        return int.from_bytes(body[32:40], "big"), body[40:].hex(), body[:32].hex()
    if data.startswith(ANCHOR_PREFIX) and len(data) == len(ANCHOR_PREFIX) + 40:
        body = data[len(ANCHOR_PREFIX):]
        return int.from_bytes(body[:8], "big"), body[8:].hex(), ""
    return None
