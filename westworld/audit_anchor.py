"""Models of audit-root anchoring: the verified head of the log and where it was anchored."""

from __future__ import annotations

from pydantic import BaseModel

ANCHOR_PREFIX = b"westworld-audit-root:"


class LogHead(BaseModel):
    ok: bool
    tree_size: int
    root: str
    problems: list[str] = []


class AnchorResult(BaseModel):
    tree_size: int
    root: str
    tx_hash: str | None
    audit_seq: int | None


def anchor_payload(tree_size: int, root_hex: str) -> bytes:
    """Calldata of an anchoring transaction: a prefix, the size as 8 bytes, the 32-byte root."""
    return ANCHOR_PREFIX + tree_size.to_bytes(8, "big") + bytes.fromhex(root_hex)


def parse_anchor(data: bytes) -> tuple[int, str] | None:
    if not data.startswith(ANCHOR_PREFIX) or len(data) != len(ANCHOR_PREFIX) + 40:
        return None
    body = data[len(ANCHOR_PREFIX):]
    return int.from_bytes(body[:8], "big"), body[8:].hex()
