"""Payload encryption: AES-256-GCM codec with a key ring (key id in the payload metadata), and its key file.

Encoding uses the active key; decoding picks the key named in the payload, so after a rotation old histories
still decrypt. Payloads that are not encrypted (the Temporal UI's start form sends plain JSON) pass through.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"


class CodecError(ValueError):
    """A payload that cannot be decrypted; the message names the key id, never the key."""


class KeyRing(BaseModel):
    active: str
    keys: dict[str, str]  # key id -> base64 of 32 bytes

    def key(self, key_id: str) -> bytes:
        try:
            return base64.b64decode(self.keys[key_id])
        except KeyError:
            raise CodecError(f"payload encrypted with unknown key id {key_id!r}; "
                             f"known: {sorted(self.keys)}") from None


def _new_key_id() -> str:
    return f"k-{secrets.token_hex(4)}"


def _write_private(path: Path, ring: KeyRing) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ring.model_dump_json(indent=2))
    os.replace(tmp, path)  # write new, then flip


def create_keyring(path: Path) -> KeyRing:
    key_id = _new_key_id()
    ring = KeyRing(active=key_id, keys={key_id: base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()})
    _write_private(path, ring)
    return ring


def load_keyring(path: Path) -> KeyRing:
    try:
        return KeyRing.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CodecError(f"no key ring at {path}; `westworld up` creates one") from None
    except (ValueError, json.JSONDecodeError) as err:
        raise CodecError(f"{path}: not a valid key ring: {err}") from err


def rotate_keyring(path: Path) -> str:
    ring = load_keyring(path)
    key_id = _new_key_id()
    ring.keys[key_id] = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    ring.active = key_id
    _write_private(path, ring)
    return key_id


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._ciphers = {kid: AESGCM(ring.key(kid)) for kid in ring.keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        kid = self._ring.active
        out = []
        for p in payloads:
            nonce = secrets.token_bytes(12)
            data = nonce + self._ciphers[kid].encrypt(nonce, p.SerializeToString(), kid.encode())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=data))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            kid = p.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                self._ring.key(kid)  # raises the named error
                raise CodecError(f"unknown key id {kid!r}")
            try:
                plain = cipher.decrypt(p.data[:12], p.data[12:], kid.encode())
            except InvalidTag:
                raise CodecError(f"payload under key {kid!r} failed authentication (tampered or wrong key)") from None
            out.append(Payload.FromString(plain))
        return out


def build_data_converter(ring: KeyRing) -> DataConverter:
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(ring))
