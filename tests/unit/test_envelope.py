"""Sealed boxes (X25519 + HKDF-SHA256 + AES-256-GCM) and document blobs: round trips and every refusal."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import envelope
from westworld.errors import DecryptFailed, InvalidInput


def _seal(pub: bytes, data: bytes, aad: bytes) -> envelope.Sealed:
    return envelope.seal(pub, data, aad, secrets.token_bytes(32), secrets.token_bytes(12))


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2048), aad=st.binary(max_size=64))
def test_round_trip(data: bytes, aad: bytes) -> None:
    priv = secrets.token_bytes(32)
    box = _seal(envelope.public_key(priv), data, aad)
    assert envelope.open_sealed(priv, box, aad) == data


def test_wrong_key_tampered_ciphertext_or_aad_is_refused() -> None:
    priv, other = secrets.token_bytes(32), secrets.token_bytes(32)
    box = _seal(envelope.public_key(priv), b"share bytes", b"epoch=1|guardian=a")
    with pytest.raises(DecryptFailed, match="wrong recipient key"):
        envelope.open_sealed(other, box, b"epoch=1|guardian=a")
    with pytest.raises(DecryptFailed, match="associated data"):
        envelope.open_sealed(priv, box, b"epoch=1|guardian=b")
    raw = bytearray(bytes.fromhex(box.ciphertext))
    raw[0] ^= 1
    with pytest.raises(DecryptFailed):
        envelope.open_sealed(priv, box.model_copy(update={"ciphertext": raw.hex()}), b"epoch=1|guardian=a")


def test_blob_round_trip_and_tamper() -> None:
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    blob = envelope.encrypt_blob(key, nonce, b"the charter", b"doc-1")
    assert blob.startswith(envelope.BLOB_MAGIC) and b"the charter" not in blob
    assert envelope.decrypt_blob(key, blob, b"doc-1") == b"the charter"
    tampered = blob[:-1] + bytes([blob[-1] ^ 0x80])
    with pytest.raises(DecryptFailed, match="tampered"):
        envelope.decrypt_blob(key, tampered, b"doc-1")
    with pytest.raises(DecryptFailed, match="doc-2"):
        envelope.decrypt_blob(key, blob, b"doc-2")
    with pytest.raises(DecryptFailed, match="not a shelter document"):
        envelope.decrypt_blob(key, b"plain text that is long enough to pass", b"doc-1")


def test_malformed_keys_are_named() -> None:
    with pytest.raises(InvalidInput, match="recipient public key must be 32 bytes, got 5"):
        envelope.seal(b"short", b"x", b"", secrets.token_bytes(32), secrets.token_bytes(12))
    with pytest.raises(InvalidInput, match="nonce must be 12 bytes"):
        envelope.encrypt_blob(secrets.token_bytes(32), b"n", b"x", b"")
    with pytest.raises(InvalidInput, match="is not usable"):
        envelope.seal(bytes(32), b"x", b"", secrets.token_bytes(32), secrets.token_bytes(12))
