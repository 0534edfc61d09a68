"""The shelter's document blob (``WWS1 || nonce || AES-256-GCM(ciphertext || tag)``) made piece by piece (pure).

:func:`westworld.envelope.encrypt_blob` needs the whole plaintext in memory and returns a second whole copy; a
document is instead read, encrypted, hashed and written in pieces, so storing one never holds more than a piece
of it. GCM is a stream mode: feeding the plaintext in pieces gives byte for byte the blob ``encrypt_blob`` gives
(the tests check it), so :func:`westworld.envelope.decrypt_blob` opens both. The caller passes the key and the
nonce (``secrets`` in an activity), as everywhere in the core.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from westworld.envelope import BLOB_MAGIC, KEY_BYTES, NONCE_BYTES
from westworld.errors import InvalidInput


class BlobEncryptor:
    """Encrypts one blob: :meth:`update` with each plaintext piece, then :meth:`finalize` once. Every returned
    piece of the blob is also hashed, so :attr:`sha256` names the whole blob once finalized."""

    def __init__(self, key: bytes, nonce: bytes, aad: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidInput(f"data key must be {KEY_BYTES} bytes, got {len(key)}")
        if len(nonce) != NONCE_BYTES:
            raise InvalidInput(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
        self._enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._enc.authenticate_additional_data(aad)
        self._hash = hashlib.sha256()
        self._head = BLOB_MAGIC + nonce
        self._finalized = False
        self.plaintext_size = 0
        self.size = 0

    def __repr__(self) -> str:  # never the key
        return f"BlobEncryptor(plaintext_size={self.plaintext_size}, finalized={self._finalized})"

    def _out(self, piece: bytes) -> bytes:
        self._hash.update(piece)
        self.size += len(piece)
        return piece

    def header(self) -> bytes:
        """The blob's first bytes (magic and nonce); call once, before the first :meth:`update`."""
        head, self._head = self._head, b""
        return self._out(head)

    def update(self, plaintext: bytes) -> bytes:
        """The ciphertext of the next plaintext piece."""
        self.plaintext_size += len(plaintext)
        return self._out(self._enc.update(plaintext))

    def finalize(self) -> bytes:
        """The blob's last bytes (the GCM tag)."""
        if self._head:
            raise InvalidInput("BlobEncryptor.header() was never called: the blob would lack its header")
        self._enc.finalize()
        self._finalized = True
        return self._out(self._enc.tag)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the whole blob (after :meth:`finalize`)."""
        if not self._finalized:
            raise InvalidInput("the blob's SHA-256 is known only after finalize()")
        return self._hash.hexdigest()
