"""Capability tokens travel sealed to the workers, bound to the one workflow input they authorise (pure).

A token is a bearer credential, and anything in a workflow's input or result sits in its history, which anyone
who can read history (or start a workflow from the UI in plain JSON) sees. So a token never travels in clear: the
holder seals it to the workers' X25519 key (a libsodium ``crypto_box`` with an ephemeral key; the worker's public
key comes from the ``CapabilityDirectoryWorkflow``) together with a *binding*:

* the workflow type and id that may use it (``AgentActionWorkflow`` / ``agent-action:<agent>:<action id>``),
* the SHA-256 of that workflow's input without the sealed field (:func:`input_digest`): the action, its nodes,
  version, config, target, discharges, peer requests... any change and the seal no longer fits.

Only a worker opens it (inside an activity), and only for the workflow execution it names: a copy taken from
history is refused for any other workflow or any other input, and the first run that opens it claims it (a
second run, even of the same workflow id, is refused), so it can authorise exactly one execution of exactly the
action it was sealed for. A workflow that hands the token on (an experiment to its canary, a canary to each step's
agent action) has the worker re-seal it for the child's binding; the token itself never enters history.
Ephemeral keys and nonces are passed in (this module stays deterministic).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from pydantic import BaseModel, Field, ValidationError

from westworld.errors import SealRefused

PREFIX = "wws1:"
SEALED = re.compile(r"wws1:([A-Za-z0-9._-]{1,64}):([A-Za-z0-9_=-]{1,120000})")
CAVEAT = "sealed-token"  # the name a denial gives when the sealed token does not fit


class Binding(BaseModel, frozen=True):
    """Which workflow execution a sealed token is for."""

    workflow_type: str = Field(min_length=1, max_length=128)
    workflow_id: str = Field(min_length=1, max_length=1000)
    input_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="input_digest() of that workflow's input.")


class SealedBody(BaseModel):
    token: str = Field(repr=False)
    binding: Binding


def is_sealed(value: str | None) -> bool:
    return value is not None and SEALED.fullmatch(value) is not None


def input_digest(model: BaseModel, sealed_field: str) -> str:
    """Hex SHA-256 of the canonical JSON of a workflow input without its sealed-token field."""
    body = model.model_dump(mode="json", exclude={sealed_field})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"westworld/sealed-input/v1\n{canonical}".encode()).hexdigest()


def box_id(sealed: str) -> str:
    """The id a sealed token is claimed under (a hash: the store never keeps the box itself)."""
    return hashlib.sha256(sealed.encode()).hexdigest()


def seal(token: str, binding: Binding, key_id: str, worker_public_key: bytes, ephemeral_key: bytes,
         nonce: bytes) -> str:
    """``token`` sealed to the worker key ``key_id`` for ``binding`` (``ephemeral_key``: 32 random bytes,
    ``nonce``: 24)."""
    body = SealedBody(token=token, binding=binding).model_dump_json().encode()
    eph = PrivateKey(ephemeral_key)
    boxed = Box(eph, PublicKey(worker_public_key)).encrypt(body, nonce)
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(bytes(eph.public_key) + bytes(boxed)).decode()}"


def key_id_of(sealed: str) -> str:
    match = SEALED.fullmatch(sealed)
    if match is None:
        raise SealRefused("not a sealed token (expected 'wws1:<key id>:<box>', from `westworld agent seal` or the "
                          "SDK's seal helper); a token in clear is never accepted")
    return match[1]


def open_sealed(sealed: str, worker_private_key: bytes, expected: Binding) -> str:
    """The token, if the box opens with the worker key and its binding is ``expected``.

    Raises:
        SealRefused: naming what does not fit (workflow type, id, input) or that it does not open.
    """
    key_id_of(sealed)
    try:
        raw = base64.urlsafe_b64decode(sealed.split(":", 2)[2])
        plain = Box(PrivateKey(worker_private_key), PublicKey(raw[:32])).decrypt(raw[32:])
        body = SealedBody.model_validate_json(plain)
    except (CryptoError, ValueError, ValidationError, IndexError) as err:
        raise SealRefused(f"the sealed token does not open with the workers' key ({type(err).__name__})") from None
    got, want = body.binding, expected
    if got.workflow_type != want.workflow_type or got.workflow_id != want.workflow_id:
        raise SealRefused(f"the token was sealed for {got.workflow_type} {got.workflow_id!r}, not for "
                          f"{want.workflow_type} {want.workflow_id!r}: a sealed token authorises only the workflow "
                          f"it was sealed for")
    if got.input_digest != want.input_digest:
        raise SealRefused(f"the token was sealed for another input of {want.workflow_id!r} (input digest "
                          f"{got.input_digest[:16]}…, this input's is {want.input_digest[:16]}…): the action, its "
                          f"nodes or its settings changed after sealing")
    return body.token
