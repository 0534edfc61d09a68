"""Peer and guardian signatures: forgery, duplicates, unknown signers, and replay across actions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import peers
from westworld.errors import SIGNER_BAD_SIGNATURE, SIGNER_DUPLICATE, SIGNER_UNKNOWN, SignatureRejected

KEYS = {f"peer-{i}": bytes([i + 1]) * 32 for i in range(4)}
REGISTRY = {pid: peers.public_key_of(k) for pid, k in KEYS.items()}


def action(**kw: object) -> peers.ActionDigestInput:
    base: dict[str, object] = {"workflow_id": "agent-action:router:a1", "action_id": "a1", "agent_id": "router",
                               "action": "set_version", "node_ids": ["n1", "n2"], "version": "2.0"}
    return peers.ActionDigestInput.model_validate(base | kw)


def req(peer: str, digest: bytes, key: bytes | None = None) -> peers.SignatureRequest:
    return peers.SignatureRequest(signer_id=peer, signature=peers.sign(key or KEYS[peer], digest))


def reason(r: peers.SignatureRequest, digest: bytes, accepted: dict[str, str] | None = None) -> str:
    with pytest.raises(SignatureRejected) as err:
        peers.validate(r, REGISTRY, digest, accepted or {})
    return err.value.reason


def test_a_registered_peer_signature_over_the_digest_is_accepted() -> None:
    d = peers.action_digest(action())
    peers.validate(req("peer-0", d), REGISTRY, d, {})


def test_forgery_unknown_and_duplicate_signers_are_refused() -> None:
    d = peers.action_digest(action())
    assert reason(req("peer-0", d, key=KEYS["peer-1"]), d) == SIGNER_BAD_SIGNATURE
    assert reason(peers.SignatureRequest(signer_id="peer-0", signature="zz"), d) == SIGNER_BAD_SIGNATURE
    assert reason(req("peer-0", d, key=b"\x09" * 32).model_copy(update={"signer_id": "mallory"}), d) == SIGNER_UNKNOWN
    assert reason(req("peer-0", d), d, {"peer-0": "sig"}) == SIGNER_DUPLICATE


@pytest.mark.parametrize("change", [
    {"workflow_id": "agent-action:router:a2"}, {"action_id": "a2"}, {"agent_id": "other"}, {"action": "restart"},
    {"node_ids": ["n1", "n2", "n3"]}, {"version": "2.1"}, {"config": {"mtu": "1400"}},
])
def test_a_signature_cannot_be_replayed_on_any_other_action(change: dict[str, object]) -> None:
    signed = req("peer-0", peers.action_digest(action()))
    other = peers.action_digest(action(**change))
    assert reason(signed, other) == SIGNER_BAD_SIGNATURE


def test_node_order_and_repeats_do_not_change_the_digest() -> None:
    assert peers.action_digest(action(node_ids=["n2", "n1", "n1"])) == peers.action_digest(action())


def test_resume_signatures_are_bound_to_their_halt() -> None:
    d1, d2 = peers.resume_digest(1, "halt:1"), peers.resume_digest(2, "halt:2")
    assert reason(req("peer-0", d1), d2) == SIGNER_BAD_SIGNATURE
    assert d1 != peers.action_digest(action())


@given(st.binary(min_size=64, max_size=64), st.binary(min_size=1, max_size=64))
@settings(max_examples=300)
def test_random_signatures_never_verify(sig: bytes, msg: bytes) -> None:
    assert not peers.verify(REGISTRY["peer-0"], msg, sig.hex())
