"""Signed tree heads of the audit log: an Ed25519 key in its own file and an append-only heads file.

After every append the worker signs the log's new (size, root, time) and appends the signed head as one JSON line
to ``audit-heads.jsonl``, a file apart from the database: whoever can rewrite the ``audit_entries`` table cannot
rewrite these heads with it, and cannot forge new ones without ``audit-head.key`` (mode 0600). The public key is
also written to ``audit-head.pub`` for verifiers holding a copy of the log. Lines are only ever appended
(``O_APPEND``, then fsync); a heads file that lags the log (a crash between commit and signing) is fine, since
only heads the log must extend are checked.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from westworld.audit_anchor import HeadLine, SignedHead, head_message
from westworld.errors import InvalidInput

KEY_FILE = "audit-head.key"
PUBLIC_KEY_FILE = "audit-head.pub"
HEADS_FILE = "audit-heads.jsonl"


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        try:
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
        except ValueError as err:
            raise InvalidInput(f"audit head key {path} is not a hex Ed25519 private key: {err}") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_bytes_raw().hex())
    return key


class HeadSigner:
    """Signs heads with the key in ``key_file`` and appends them to ``heads_file``."""

    def __init__(self, key_file: Path, heads_file: Path) -> None:
        self._key = _load_or_create_key(key_file)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        self.heads_file = heads_file
        pub = key_file.with_name(PUBLIC_KEY_FILE)
        if not pub.exists() or pub.read_text().strip() != self.public_key:
            pub.write_text(self.public_key + "\n")

    @classmethod
    def in_dir(cls, data_dir: Path) -> HeadSigner:
        """The signer of the log kept in ``data_dir`` (the key is created on first use)."""
        return cls(data_dir / KEY_FILE, data_dir / HEADS_FILE)

    def sign(self, tree_size: int, root: str) -> SignedHead:
        """Sign (size, root, now) and append it to the heads file (fsynced before returning)."""
        signed_at = datetime.now(UTC).isoformat(timespec="microseconds")
        head = SignedHead(tree_size=tree_size, root=root, signed_at=signed_at, key=self.public_key,
                          signature=self._key.sign(head_message(tree_size, root, signed_at)).hex())
        fd = os.open(self.heads_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (head.model_dump_json() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return head

    def has_heads(self) -> bool:
        return self.heads_file.exists() and self.heads_file.stat().st_size > 0


def read_heads(path: Path) -> list[HeadLine]:
    """Every line of a heads file, each as its head or why it cannot be read (a missing file has no lines)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines: list[HeadLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append(HeadLine(line=number, head=SignedHead.model_validate(json.loads(raw))))
        except (ValueError, ValidationError) as err:
            lines.append(HeadLine(line=number, error=str(err).splitlines()[0][:120]))
    return lines
