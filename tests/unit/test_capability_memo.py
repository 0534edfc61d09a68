"""The memoized parse and HMAC chain of westworld/capability.py never let through what the full check refuses."""

from __future__ import annotations

from datetime import UTC, datetime

from pymacaroons import Macaroon

from westworld import capability as cap
from westworld import caveats as cv

KEY = bytes(range(32))
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STATE = cap.CheckState(live_nodes=100, now=NOW)
FACTS = cv.Facts(action="set_version", targets=[cv.Target(node_id="n1", region="eu")], live_nodes=100, now=NOW,
                 window_usage={3600: 1})


def token(tid: str = "t1") -> str:
    ident = cap.TokenIdentity(key_id="k1", token_id=tid, agent_id="memo", epoch=0)
    return cap.attenuate(cap.mint(KEY, ident, ["set_version"]), ["affects_nodes_le = 2", "regions = eu"])


def test_a_verified_chain_is_not_taken_for_another_key() -> None:
    t = token()
    assert cap.check_token(t, [], KEY, STATE, "memo", FACTS).allowed  # verified and remembered
    denied = cap.check_token(t, [], bytes(32), STATE, "memo", FACTS)
    assert (denied.allowed, denied.caveat) == (False, cap.SIGNATURE)
    assert cap.check_token(t, [], None, STATE, "memo", FACTS).caveat == cap.SIGNATURE  # a retired key


def test_a_macaroon_altered_after_parsing_is_verified_again() -> None:
    t = token("t2")
    parsed = cap.parse_token(t)
    assert cap.check(parsed, KEY, STATE, "memo", FACTS).allowed
    del parsed.macaroon.caveats[1]  # a caveat stripped from the very object, the strings unchanged
    assert cap.check(parsed, KEY, STATE, "memo", FACTS).caveat == cap.SIGNATURE
    other = cap.parse_token(t)
    other.macaroon.add_first_party_caveat("regions = us")  # a caveat added without the key: breaks the chain
    other.macaroon._signature = cap.parse_token(t).macaroon.signature_bytes
    assert cap.check(other, KEY, STATE, "memo", FACTS).caveat == cap.SIGNATURE


def test_the_caller_owns_what_parse_token_returns_and_shares_what_the_check_reads() -> None:
    t = token("t3")
    mine = cap.parse_token(t)
    mine.macaroon.add_first_party_caveat("nodes = n9")
    assert cap.parse_token(t).macaroon.serialize() == t  # another parse is not affected
    assert cap.parse_token_shared(t) is cap.parse_token_shared(t)
    assert Macaroon.deserialize(t).serialize() == t
