"""Payload encryption: the AES-256-GCM codec of the data converter and the key ring file it reads.

Every payload the SDK writes to workflow history is serialized whole (data *and* metadata), encrypted
with the active key of the ring and stored as ``binary/encrypted`` with the key id in its metadata. Decoding
picks the key by that id, so payloads written before a key rotation stay readable. Payloads that are not
encrypted (the Temporal UI's start form sends plain JSON) pass through unchanged.

A payload that cannot be decrypted (unknown key id, tampered, relabelled) is never retried forever. The data
converter of :func:`build_data_converter` turns it into a ``binary/undecryptable`` marker carrying the key id and
what is wrong, and its payload converter refuses to read the marker with a non-retryable ``ApplicationError``
of type ``PayloadUndecryptable``. The SDK then fails exactly what needed the payload: a workflow whose start
input it is fails (not its task, retried forever), an update carrying it is rejected, a signal carrying it is
dropped (logged), an activity or client call reading it raises. One forged message cannot wedge a running
workflow. The codec server uses the strict codec and answers 422.

The key file is JSON ``{"active": "k-…", "keys": {"k-…": "<base64 of 32 bytes>"}}`` with mode 0600. Error
messages name key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    EncodingPayloadConverter,
    PayloadCodec,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError

from westworld.errors import PAYLOAD_UNDECRYPTABLE, KeyRingError, PayloadDecryptionError

ENCODING = b"binary/encrypted"
"""Value of the ``encoding`` metadata of an encrypted payload."""
KEY_ID_METADATA = "encryption-key-id"
"""Metadata key naming the key a payload was encrypted with."""
UNDECRYPTABLE = b"binary/undecryptable"
"""Encoding of the marker that stands in for a payload the codec could not decrypt (never stored)."""
ERROR_METADATA = "decrypt-error"
"""Metadata key of an undecryptable marker: what is wrong with the payload."""
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_PREFIX = b"westworld-payload/v1 key-id="
_KEY_ID = re.compile(r"^k-[0-9a-f]{8}$")


def new_key_id() -> str:
    """A fresh key id such as ``k-1f2e3d4c``."""
    return f"k-{secrets.token_hex(4)}"


class KeyRing(BaseModel):
    """The payload keys: which one encrypts new payloads, and all that may still decrypt old ones.

    Attributes:
        active: Id of the key used to encrypt new payloads; must be in ``keys``.
        keys: Key id → 32-byte AES-256 key. Never shown by ``repr``.
    """

    model_config = ConfigDict(frozen=True)

    active: str
    keys: dict[str, bytes] = Field(repr=False)

    @model_validator(mode="after")
    def _check(self) -> KeyRing:
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise ValueError(f"key id {key_id!r} is not of the form k-<8 hex digits>")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        if self.active not in self.keys:
            raise ValueError(f"active key {self.active!r} is not in the key ring")
        return self

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring with one fresh random key, active."""
        key_id = new_key_id()
        return cls(active=key_id, keys={key_id: secrets.token_bytes(KEY_BYTES)})

    def rotated(self) -> KeyRing:
        """A copy with one more fresh key, made active; the old keys stay for decryption."""
        key_id = new_key_id()
        while key_id in self.keys:
            key_id = new_key_id()
        return KeyRing(active=key_id, keys={**self.keys, key_id: secrets.token_bytes(KEY_BYTES)})

    def to_json(self) -> str:
        """The key file's JSON form (keys in base64)."""
        keys = {k: base64.b64encode(v).decode("ascii") for k, v in self.keys.items()}
        return json.dumps({"active": self.active, "keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse the key file's JSON form.

        Raises:
            KeyRingError: The text is not a valid key ring (the message never contains key material).
        """
        try:
            raw: Any = json.loads(text)
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in raw["keys"].items()}
            return cls(active=raw["active"], keys=keys)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise KeyRingError(f"malformed key ring: {_describe(err)}") from None


def _describe(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(str(e["msg"]) for e in err.errors())
    if isinstance(err, KeyError):
        return f"missing field {err}"
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON ({err.msg})"
    return type(err).__name__  # base64/type errors could echo key bytes: name the kind only


def load_keyring(path: Path) -> KeyRing:
    """Read the key ring file.

    Raises:
        KeyRingError: The file is missing or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyRingError(f"no key ring at {path}; `westworld up` creates one") from None
    try:
        return KeyRing.from_json(text)
    except KeyRingError as err:
        raise KeyRingError(f"{path}: {err}") from None


def _write_new(path: Path, ring: KeyRing) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write the ring to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(ring.to_json())
        f.flush()
        os.fsync(f.fileno())


def create_keyring(path: Path) -> KeyRing:
    """Create a key file with one fresh active key (mode 0600).

    Raises:
        KeyRingError: The file already exists (keys are never overwritten: old payloads need them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ring = KeyRing.generate()
    try:
        _write_new(path, ring)
    except FileExistsError:
        raise KeyRingError(f"a key ring already exists at {path}; rotate it to add a key") from None
    return ring


def rotate_keyring(path: Path) -> str:
    """Add a fresh key to the file and make it active; old keys stay so old payloads still decrypt.

    The new ring is written to a temporary file and renamed over the old one, so a crash leaves either ring.

    Returns:
        The id of the new active key.
    """
    ring = load_keyring(path).rotated()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    _write_new(tmp, ring)
    os.replace(tmp, path)
    return ring.active


def _aad(key_id: str) -> bytes:
    return _AAD_PREFIX + key_id.encode("ascii")


def encrypt_payload(payload: Payload, ring: KeyRing) -> Payload:
    """Encrypt one payload (serialized whole) with the ring's active key."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.active]).encrypt(nonce, payload.SerializeToString(), _aad(ring.active))
    return Payload(
        metadata={"encoding": ENCODING, KEY_ID_METADATA: ring.active.encode("ascii")},
        data=nonce + sealed,
    )


def payload_key_id(payload: Payload) -> str | None:
    """The key id of an encrypted payload; ``None`` if the payload is not ``binary/encrypted``.

    Raises:
        PayloadDecryptionError: The payload is encrypted but names no key id.
    """
    if payload.metadata.get("encoding") != ENCODING:
        return None
    raw_id = payload.metadata.get(KEY_ID_METADATA)
    if raw_id is None:
        raise PayloadDecryptionError(f"encrypted payload has no {KEY_ID_METADATA} metadata")
    # The id is whatever the sender wrote: cap it so an error message cannot be flooded through it.
    key_id = raw_id.decode("utf-8", errors="replace")
    return key_id if len(key_id) <= 40 else key_id[:40] + "…"


def decrypt_payload(payload: Payload, ring: KeyRing) -> Payload:
    """Decrypt one payload; a payload that is not ``binary/encrypted`` is returned unchanged.

    Raises:
        PayloadDecryptionError: The key id is missing or unknown, or the payload fails authentication.
    """
    key_id = payload_key_id(payload)
    if key_id is None:
        return payload
    key = ring.keys.get(key_id)
    if key is None:
        known = ", ".join(sorted(ring.keys))
        raise PayloadDecryptionError(f"payload encrypted with key {key_id!r}, not in the key ring ({known})")
    if len(payload.data) < NONCE_BYTES + TAG_BYTES:
        raise PayloadDecryptionError(f"payload encrypted with key {key_id!r} is truncated")
    nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
    try:
        return Payload.FromString(AESGCM(key).decrypt(nonce, sealed, _aad(key_id)))
    except (InvalidTag, DecodeError):
        raise PayloadDecryptionError(
            f"payload encrypted with key {key_id!r} failed authentication "
            "(tampered, or a different key under the same id)"
        ) from None


def undecryptable_marker(payload: Payload, err: PayloadDecryptionError) -> Payload:
    """The marker that replaces an undecryptable payload: its key id and the reason, no data."""
    metadata = {"encoding": UNDECRYPTABLE, ERROR_METADATA: str(err).encode("utf-8")}
    raw_id = payload.metadata.get(KEY_ID_METADATA)
    if raw_id is not None:
        metadata[KEY_ID_METADATA] = raw_id[:40]
    return Payload(metadata=metadata)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec over a :class:`KeyRing`.

    Args:
        keyring: The keys; new payloads use its active key.
        key_file: If given, the file is re-read when a payload names a key id not in the ring, so a process
            started before a rotation still decodes payloads written with the new key.
        mark_undecryptable: Decode a payload that cannot be decrypted to an :data:`UNDECRYPTABLE` marker
            (read by :class:`UndecryptablePayloadConverter`) instead of raising, so the SDK fails only the
            workflow, update or signal that carries it. Off: ``decode`` raises (the codec server).
    """

    def __init__(self, keyring: KeyRing, key_file: Path | None = None, *, mark_undecryptable: bool = False) -> None:
        self._ring = keyring
        self._key_file = key_file
        self._mark = mark_undecryptable

    @property
    def keyring(self) -> KeyRing:
        """The ring in use (after any reload)."""
        return self._ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload with the active key."""
        return [encrypt_payload(p, self._ring) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt each encrypted payload; pass others through.

        Raises:
            PayloadDecryptionError: A payload names an unknown key id or fails authentication (unless the codec
                marks undecryptable payloads instead).
            KeyRingError: The key file, re-read for an unknown key id, is unreadable (transient: retried).
        """
        return [self._decrypt(p) for p in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        try:
            key_id = payload_key_id(payload)
            if key_id is not None and key_id not in self._ring.keys and self._key_file is not None:
                self._ring = load_keyring(self._key_file)
            return decrypt_payload(payload, self._ring)
        except PayloadDecryptionError as err:
            if not self._mark:
                raise
            return undecryptable_marker(payload, err)


class UndecryptablePayloadConverter(EncodingPayloadConverter):
    """Reads the :data:`UNDECRYPTABLE` marker by refusing it: a typed, non-retryable error naming the key id."""

    @property
    def encoding(self) -> str:
        return UNDECRYPTABLE.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None  # never writes: the marker only stands in for a payload that came in unreadable

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        reason = payload.metadata.get(ERROR_METADATA, b"no reason recorded").decode("utf-8", errors="replace")
        raise ApplicationError(
            f"undecryptable payload: {reason}. Check that this worker's key ring (codec_key_file) holds the "
            "key, or the sender used this deployment's keys",
            type=PAYLOAD_UNDECRYPTABLE,
            non_retryable=True,
        )


class WestworldPayloadConverter(PydanticPayloadConverter):
    """The pydantic payload converter plus :class:`UndecryptablePayloadConverter` (nullary, as the SDK needs)."""

    def __init__(self) -> None:
        super().__init__()
        self._set_converters(*self.converters.values(), UndecryptablePayloadConverter())


FAILURE_BUDGET = 3 * 1024
"""Bytes a failure may take: the server keeps a retrying activity's last failure only up to 4 KiB
(``limit.mutableStateActivityFailureSize.error``) and shows a larger one as "Failure exceeds size limit."."""
TRIMMED = "… (trimmed)"


def bound_failure(failure: Failure, budget: int = FAILURE_BUDGET, *, trim_message: bool = True) -> None:
    """Fit ``failure`` in ``budget`` bytes, giving up the least telling parts first, step by step: the causes'
    messages and the stack traces are shortened in turns (a cause's message keeps its head, a stack trace its
    innermost frames), then the deepest causes go, last the top message's tail (only if ``trim_message``). A
    failure already within the budget is left as it is."""
    chain = [failure]
    while chain[-1].HasField("cause"):
        chain.append(chain[-1].cause)
    for cause_keep, stack_keep in ((1000, 2000), (1000, 1000), (400, 400), (100, 0)):
        for f in reversed(chain):
            if failure.ByteSize() <= budget:
                return
            if f is not failure and len(f.message) > cause_keep:
                f.message = f.message[:cause_keep] + TRIMMED
            if len(f.stack_trace) > stack_keep:
                f.stack_trace = "…" + f.stack_trace[-stack_keep:] if stack_keep else ""
    while failure.ByteSize() > budget and len(chain) > 1:
        chain.pop()
        chain[-1].ClearField("cause")
    if trim_message and (over := failure.ByteSize() - budget) > 0:
        failure.message = failure.message[:max(100, len(failure.message) - over - 4 * len(TRIMMED))] + TRIMMED


class BoundedFailureConverter(DefaultFailureConverter):
    """The SDK's failure converter, with each failure kept within :data:`FAILURE_BUDGET` (see
    :func:`bound_failure`), so that `westworld stuck` and the UI show a retrying activity's real cause. A workflow's
    own failure keeps its whole message (no such limit applies to it; an ``InvalidInput`` lists every problem)."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        bound_failure(failure, trim_message=activity.in_activity())


def build_data_converter(keyring: KeyRing, key_file: Path | None = None) -> DataConverter:
    """The project's data converter: pydantic JSON payloads, encrypted by :class:`EncryptionCodec`; failures kept
    within the server's size limit by :class:`BoundedFailureConverter`.

    An undecryptable payload fails what carries it with a ``PayloadUndecryptable`` error (see the module
    docstring), never a workflow task retried forever.

    Args:
        keyring: The keys to encrypt and decrypt with.
        key_file: Optional path to re-read on an unknown key id (see :class:`EncryptionCodec`).
    """
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=WestworldPayloadConverter,
        failure_converter_class=BoundedFailureConverter,
        payload_codec=EncryptionCodec(keyring, key_file, mark_undecryptable=True),
    )
