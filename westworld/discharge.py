"""Third-party caveats addressed to peer nodes, and the discharges peers mint for them (pure).

A holder adds a third-party caveat for peer P: a fresh caveat key and a predicate are sealed to P's public key
(P's Ed25519 key converted to X25519, a libsodium ``crypto_box`` with an ephemeral key; the ephemeral key and
nonces are passed in, so this module stays deterministic). Only P can open it, so only P can mint the
discharge macaroon whose HMAC chain starts from that caveat key. The holder binds the discharge to the token
(``prepare_for_request``) and presents both; :func:`westworld.capability.check` then requires a discharge for
every peer caveat. Peers named in one token are distinct, so a token with k peer caveats needs k distinct peers.

A discharge is bound to the one action the peer was shown: it carries ``action_digest = <digest>`` (the digest
of :func:`westworld.peers.action_digest`: workflow id, action id, agent, action, nodes, version, config) and a
``valid_until``; the check refuses it for any other action, after its expiry, or if its expiry is further away
than the policy's ``peers.discharge_ttl_max``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey
from pydantic import BaseModel
from pymacaroons import Macaroon

from westworld import caveats as cv
from westworld.capability import parse_token
from westworld.errors import Denial, InvalidInput

PREFIX = "wwp1:"


class PeerCaveatRequest(BaseModel):
    """What a peer reads when asked to discharge: who asks, for what."""

    peer_id: str
    predicate: str
    caveat_key: str  # hex; the discharge's root key
    agent_id: str


def add_peer_caveat(token: str, peer_id: str, peer_public_key: bytes, predicate: str, caveat_key: bytes,
                    ephemeral_key: bytes, box_nonce: bytes, caveat_nonce: bytes) -> str:
    """The token with a third-party caveat only ``peer_id`` can discharge.

    ``peer_public_key`` is the peer's raw Ed25519 public key; ``caveat_key`` and ``ephemeral_key`` are 32 random
    bytes, ``box_nonce`` and ``caveat_nonce`` 24 random bytes (from the caller).
    """
    if not cv.NAME.fullmatch(peer_id):
        raise InvalidInput(f"peer id {peer_id!r} is not a valid node id")
    try:
        parsed = parse_token(token)
    except Denial as d:
        raise InvalidInput(f"token: {d.reason}") from None
    if peer_id in parsed.peers:
        raise InvalidInput(f"the token already needs a discharge from peer {peer_id}; peers must be distinct")
    body = json.dumps({"peer": peer_id, "predicate": predicate, "key": caveat_key.hex(),
                       "agent": parsed.identity.agent_id}).encode()
    eph = PrivateKey(ephemeral_key)
    peer_x = PublicKey(crypto_sign_ed25519_pk_to_curve25519(peer_public_key))
    sealed = Box(eph, peer_x).encrypt(body, box_nonce)
    caveat_id = PREFIX + base64.urlsafe_b64encode(bytes(eph.public_key) + bytes(sealed)).decode()
    parsed.macaroon.add_third_party_caveat(peer_id, caveat_key, caveat_id, nonce=caveat_nonce)
    return str(parsed.macaroon.serialize())


def open_peer_caveat(caveat_id: str, peer_id: str, peer_private_key: bytes) -> PeerCaveatRequest:
    """What a peer is asked to discharge (``peer_private_key``: the raw 32-byte Ed25519 seed).

    Raises:
        InvalidInput: the caveat is not addressed to this peer or does not open.
    """
    if not caveat_id.startswith(PREFIX):
        raise InvalidInput("not a Westworld peer caveat")
    try:
        raw = base64.urlsafe_b64decode(caveat_id[len(PREFIX):])
        ed_sk = _ed25519_secret(peer_private_key)
        mine = PrivateKey(crypto_sign_ed25519_sk_to_curve25519(ed_sk))
        body = json.loads(Box(mine, PublicKey(raw[:32])).decrypt(raw[32:]))
        request = PeerCaveatRequest(peer_id=body["peer"], predicate=body["predicate"], caveat_key=body["key"],
                                    agent_id=body["agent"])
    except (CryptoError, ValueError, KeyError, TypeError) as err:
        raise InvalidInput(f"the caveat does not open with peer {peer_id}'s key ({type(err).__name__})") from None
    if request.peer_id != peer_id:
        raise InvalidInput(f"the caveat is addressed to peer {request.peer_id}, not {peer_id}")
    return request


def peer_caveats(token: str) -> list[tuple[str, str]]:
    """(peer id, caveat id) of each third-party caveat of a token."""
    try:
        parsed = parse_token(token)
    except Denial as d:
        raise InvalidInput(f"token: {d.reason}") from None
    return [(str(c.location), c.caveat_id) for c in parsed.macaroon.caveats if not c.first_party()]


def discharge(token: str, peer_id: str, peer_private_key: bytes, lines: list[str], *, action_digest: bytes,
              valid_until: datetime) -> str:
    """Peer ``peer_id`` discharges its caveat in ``token`` for the one action whose digest is ``action_digest``
    until ``valid_until`` (UTC), narrowed by further caveat ``lines``, and returns the discharge bound to the token,
    ready to present with it."""
    if len(action_digest) != 32:
        raise InvalidInput("action_digest: the action's 32-byte SHA-256 digest (westworld.peers.action_digest)")
    if valid_until.tzinfo is None:
        raise InvalidInput("valid_until: give a UTC time")
    until = valid_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"action_digest = {action_digest.hex()}", f"valid_until = {until}", *lines]
    found = [cid for pid, cid in peer_caveats(token) if pid == peer_id]
    if not found:
        raise InvalidInput(f"the token has no third-party caveat for peer {peer_id}")
    request = open_peer_caveat(found[0], peer_id, peer_private_key)
    d = Macaroon(location=peer_id, identifier=found[0], key=bytes.fromhex(request.caveat_key))
    for line in lines:
        d.add_first_party_caveat(cv.parse(line).text)
    root = Macaroon.deserialize(token)
    return str(root.prepare_for_request(d).serialize())


def _ed25519_secret(seed: bytes) -> bytes:
    """libsodium's 64-byte Ed25519 secret key (seed || public key) from a 32-byte seed."""
    sk = SigningKey(seed)
    return bytes(sk) + bytes(sk.verify_key)
