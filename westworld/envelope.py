"""Sealing bytes to an X25519 public key, and the AES-256-GCM blob format of shelter documents.

``seal``: an ephemeral X25519 key agrees a secret with the recipient's key, HKDF-SHA256 (salt = ephemeral public
|| recipient public, a fixed info tag) derives an AES-256-GCM key, and the plaintext is encrypted with the
caller's associated data (which binds the box to its purpose: a share of epoch e for guardian g, the data key of
document d). This is the DHKEM(X25519)+HKDF+AEAD shape of HPKE's base mode, built from ``cryptography``.

Pure: the ephemeral private key and the nonces are passed in (``secrets`` in an activity or the CLI).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field

from westworld.errors import DecryptFailed, InvalidInput

KEY_BYTES = 32
NONCE_BYTES = 12
SEAL_INFO = b"westworld/shelter/seal/v1"
BLOB_MAGIC = b"WWS1"  # document ciphertext: magic || nonce || AES-256-GCM(ciphertext || tag)
HEX32 = r"^[0-9a-f]{64}$"


class Sealed(BaseModel):
    """Bytes sealed to one X25519 public key; public (safe in history and the database)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ephemeral_public: str = Field(pattern=HEX32, description="hex X25519 public key of the sender's one-time key")
    nonce: str = Field(pattern=r"^[0-9a-f]{24}$", description="hex 96-bit AES-GCM nonce")
    ciphertext: str = Field(pattern=r"^([0-9a-f]{2})+$", description="hex AES-256-GCM ciphertext with its tag")


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise InvalidInput(f"{name} must be {size} bytes, got {len(value)}")


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    _check_len("X25519 private key", private, KEY_BYTES)
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral_public + recipient_public,
                info=SEAL_INFO).derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, aad: bytes, ephemeral_private: bytes, nonce: bytes) -> Sealed:
    """Encrypt ``plaintext`` so only the holder of ``recipient_public``'s private key can read it."""
    _check_len("recipient public key", recipient_public, KEY_BYTES)
    _check_len("ephemeral private key", ephemeral_private, KEY_BYTES)
    _check_len("nonce", nonce, NONCE_BYTES)
    eph = X25519PrivateKey.from_private_bytes(ephemeral_private)
    eph_pub = eph.public_key().public_bytes_raw()
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError as err:  # an all-zero shared secret: a low-order recipient key
        raise InvalidInput(f"recipient public key {recipient_public.hex()} is not usable: {err}") from err
    key = _derive(shared, eph_pub, recipient_public)
    ct = AESGCM(key).encrypt(nonce, plaintext, aad)
    return Sealed(ephemeral_public=eph_pub.hex(), nonce=nonce.hex(), ciphertext=ct.hex())


def open_sealed(recipient_private: bytes, sealed: Sealed, aad: bytes) -> bytes:
    """Decrypt a :class:`Sealed` box.

    Raises:
        DecryptFailed: the key is not the recipient's, or the box or its associated data was altered.
    """
    _check_len("recipient private key", recipient_private, KEY_BYTES)
    me = X25519PrivateKey.from_private_bytes(recipient_private)
    my_pub = me.public_key().public_bytes_raw()
    eph_pub = bytes.fromhex(sealed.ephemeral_public)
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError as err:
        raise DecryptFailed(f"sealed box has an unusable ephemeral key: {err}") from err
    key = _derive(shared, eph_pub, my_pub)
    try:
        return AESGCM(key).decrypt(bytes.fromhex(sealed.nonce), bytes.fromhex(sealed.ciphertext), aad)
    except InvalidTag as err:
        raise DecryptFailed(
            f"sealed box does not open with key {my_pub.hex()[:16]}…: wrong recipient key, "
            f"or the ciphertext or its associated data ({aad!r}) was altered"
        ) from err


def encrypt_blob(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM ``plaintext`` into the self-describing blob ``WWS1 || nonce || ciphertext+tag``."""
    _check_len("data key", key, KEY_BYTES)
    _check_len("nonce", nonce, NONCE_BYTES)
    return BLOB_MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt_blob(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a blob made by :func:`encrypt_blob`.

    Raises:
        DecryptFailed: not a shelter blob, the wrong key, or the blob or its associated data was altered.
    """
    _check_len("data key", key, KEY_BYTES)
    head = len(BLOB_MAGIC) + NONCE_BYTES
    if len(blob) < head + 16 or not blob.startswith(BLOB_MAGIC):
        raise DecryptFailed(f"not a shelter document ciphertext ({len(blob)} bytes, no {BLOB_MAGIC!r} header)")
    try:
        return AESGCM(key).decrypt(blob[len(BLOB_MAGIC):head], blob[head:], aad)
    except InvalidTag as err:
        raise DecryptFailed(
            f"document ciphertext does not authenticate for {aad!r}: wrong data key or the ciphertext was tampered"
        ) from err
