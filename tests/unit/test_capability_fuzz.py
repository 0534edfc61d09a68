"""Mutation fuzzing of token parsing and verification: ZERO acceptances of anything but the genuine token.

A genuine token (root caveats plus a peer caveat with its bound discharge) is allowed under the fuzzing facts;
every mutant (truncated, bit-flipped, random, re-signed with another key, caveats stripped/reordered/added,
discharges missing, swapped, unbound or forged, expired, revoked, old epoch) must be denied, and no mutant may
raise. Each class counts the cases it ran; the counts are asserted, so a fuzzer that silently ran nothing fails.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from pymacaroons import Macaroon

from westworld import capability as cap
from westworld import caveats as cv
from westworld import discharge as dc

KEY = bytes(range(32))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PEER = SigningKey(bytes(range(100, 132)))
IDENT = cap.TokenIdentity(key_id="k1", token_id="t1", agent_id="router", epoch=2)
ROOT = cap.attenuate(cap.mint(KEY, IDENT, ["set_version", "restart"]),
                     ["affects_nodes_le = 20", "valid_until = 2026-06-01T00:00:00Z", "budget = 50/3600s"])
TOKEN = dc.add_peer_caveat(ROOT, "peer-a", bytes(PEER.verify_key), "approve rollout", bytes(range(1, 33)),
                           bytes(range(2, 34)), bytes(24), bytes(range(24)))
DIGEST = bytes(range(7, 39))  # the action's digest (westworld/peers.py): the discharge is bound to it
EXPIRY = NOW + timedelta(minutes=30)
DISCHARGE = dc.discharge(TOKEN, "peer-a", bytes(PEER), [], action_digest=DIGEST, valid_until=EXPIRY)
FACTS = cv.Facts(action="set_version", targets=[cv.Target(node_id=f"n{i}") for i in range(5)], live_nodes=1000,
                 now=NOW, window_usage={3600: 5}, action_digest=DIGEST.hex())
STATE = cap.CheckState(live_nodes=1000, now=NOW, revocation_epoch=2)
EXAMPLES = 600
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def decide(token: str, discharges: list[str], key: bytes = KEY, state: cap.CheckState = STATE,
           facts: cv.Facts = FACTS) -> cap.CheckResult:
    return cap.check_token(token, discharges, key, state, "router", facts)


def run_class(body: Callable[[st.DataObject], tuple[str, list[str]] | None]) -> int:
    """Run ``body`` (which returns a mutant token and discharges, or None when the draw is not a mutant) on
    EXAMPLES hypothesis draws; assert every mutant is denied; return how many mutants were checked."""
    ran: list[int] = []

    @FUZZ
    @given(st.data())
    def case(data: st.DataObject) -> None:
        mutant = body(data)
        if mutant is None:
            return
        token, discharges = mutant
        if token == TOKEN and discharges == [DISCHARGE]:
            return  # not a mutant
        result = decide(token, discharges)
        assert not result.allowed, f"ACCEPTED a mutant: {token!r} {discharges!r}"
        assert result.caveat, "a denial must name what failed"
        ran.append(1)

    case()
    return len(ran)


def test_the_genuine_token_is_allowed() -> None:
    result = decide(TOKEN, [DISCHARGE])
    assert result.allowed, result


def test_truncated_tokens_and_discharges() -> None:
    def body(data: st.DataObject) -> tuple[str, list[str]]:
        which = data.draw(st.sampled_from(["token", "discharge"]))
        text = TOKEN if which == "token" else DISCHARGE
        cut = text[:data.draw(st.integers(0, len(text) - 1))]
        return (cut, [DISCHARGE]) if which == "token" else (TOKEN, [cut])

    assert run_class(body) >= EXAMPLES * 0.9


def _flip(text: str, data: st.DataObject) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))  # v1 tokens are unpadded
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_bit_flips_in_the_decoded_bytes_and_in_the_text() -> None:
    def body(data: st.DataObject) -> tuple[str, list[str]]:
        target = data.draw(st.sampled_from(["token-bytes", "discharge-bytes", "token-text"]))
        if target == "token-bytes":
            return _flip(TOKEN, data), [DISCHARGE]
        if target == "discharge-bytes":
            return TOKEN, [_flip(DISCHARGE, data)]
        i = data.draw(st.integers(0, len(TOKEN) - 1))
        c = data.draw(st.characters(codec="ascii").filter(lambda ch: ch != TOKEN[i]))
        return TOKEN[:i] + c + TOKEN[i + 1:], [DISCHARGE]

    assert run_class(body) >= EXAMPLES * 0.9


def test_random_and_malformed_input_never_raises_and_is_denied() -> None:
    def body(data: st.DataObject) -> tuple[str, list[str]]:
        kind = data.draw(st.sampled_from(["text", "b64", "packets"]))
        if kind == "text":
            return data.draw(st.text(max_size=400)), data.draw(st.lists(st.text(max_size=50), max_size=2))
        if kind == "b64":
            return base64.urlsafe_b64encode(data.draw(st.binary(max_size=400))).decode(), []
        # well-formed packets with random fields
        ident = data.draw(st.sampled_from([IDENT.identifier, "ww1 kid=k1 tid=t1 agent=router epoch=99", "junk"]))
        m = Macaroon(location=data.draw(st.sampled_from(["westworld", "x"])), identifier=ident,
                     key=data.draw(st.binary(min_size=32, max_size=32)))
        for line in data.draw(st.lists(st.sampled_from(["affects_nodes_le = 99", "actions = set_version"]))):
            m.add_first_party_caveat(line)
        return m.serialize(), []

    assert run_class(body) >= EXAMPLES * 0.9


def _rebuild(caveats: list[str], key: bytes) -> str:
    """The root token's first-party caveat list rebuilt (re-signed) under ``key``."""
    m = Macaroon(location=cap.LOCATION, identifier=IDENT.identifier, key=key)
    for line in caveats:
        m.add_first_party_caveat(line)
    return str(m.serialize())


def test_re_signed_with_another_key_and_caveats_stripped_reordered_or_added() -> None:
    genuine = Macaroon.deserialize(TOKEN)
    first_party = [str(c.caveat_id) for c in genuine.caveats if c.first_party()]

    def body(data: st.DataObject) -> tuple[str, list[str]] | None:
        kind = data.draw(st.sampled_from(["resign", "strip", "reorder", "add-unsigned", "drop-peer"]))
        if kind == "resign":
            other = data.draw(st.binary(min_size=32, max_size=32).filter(lambda k: k != KEY))
            return _rebuild(first_party, other), []
        m = Macaroon.deserialize(TOKEN)
        if kind == "strip":
            del m.caveats[data.draw(st.integers(0, len(m.caveats) - 1))]
        elif kind == "reorder":
            order = data.draw(st.permutations(range(len(m.caveats))))
            if list(order) == list(range(len(m.caveats))):
                return None
            m.caveats = [m.caveats[i] for i in order]
        elif kind == "add-unsigned":
            extra = Macaroon.deserialize(cap.attenuate(TOKEN, ["affects_nodes_le = 100000"]))
            m.caveats = [*m.caveats, extra.caveats[-1]]  # the caveat without its signature update
        else:
            m.caveats = [c for c in m.caveats if c.first_party()]
        return m.serialize(), [DISCHARGE]

    assert run_class(body) >= EXAMPLES * 0.9


def test_discharges_missing_unbound_forged_or_for_another_token() -> None:
    unbound = Macaroon.deserialize(DISCHARGE)
    other_root = dc.add_peer_caveat(cap.mint(KEY, IDENT, ["set_version"]), "peer-a", bytes(PEER.verify_key), "x",
                                    bytes(range(1, 33)), bytes(range(2, 34)), bytes(24), bytes(range(24)))
    other_discharge = dc.discharge(other_root, "peer-a", bytes(PEER), [], action_digest=DIGEST, valid_until=EXPIRY)
    caveat_id = dc.peer_caveats(TOKEN)[0][1]

    def body(data: st.DataObject) -> tuple[str, list[str]]:
        kind = data.draw(st.sampled_from(["none", "other-token", "forged", "unbound", "junk"]))
        if kind == "none":
            return TOKEN, []
        if kind == "other-token":
            return TOKEN, [other_discharge]
        if kind == "forged":  # the right identifier, a guessed caveat key
            d = Macaroon(location="peer-a", identifier=caveat_id, key=data.draw(st.binary(min_size=32, max_size=32)))
            return TOKEN, [Macaroon.deserialize(TOKEN).prepare_for_request(d).serialize()]
        if kind == "unbound":  # the genuine discharge, never bound to this request
            d = Macaroon(location="peer-a", identifier=caveat_id, key=unbound.signature_bytes)
            return TOKEN, [d.serialize()]
        return TOKEN, [data.draw(st.text(max_size=80))]

    assert run_class(body) >= EXAMPLES * 0.9


@given(st.integers(0, 10**6))
@settings(max_examples=EXAMPLES, deadline=None)
def test_expired_revoked_and_old_epoch_are_denied(seconds: int) -> None:
    late = EXPIRY + timedelta(seconds=seconds)
    late_facts = FACTS.model_copy(update={"now": late})
    assert decide(TOKEN, [DISCHARGE], state=STATE.model_copy(update={"now": late}), facts=late_facts).caveat == (
        cap.DISCHARGE_EXPIRED)
    assert decide(TOKEN, [DISCHARGE], state=STATE.model_copy(update={"revoked": True})).caveat == cap.REVOKED
    epoch = 3 + seconds % 1000
    assert decide(TOKEN, [DISCHARGE], state=STATE.model_copy(update={"revocation_epoch": epoch})).caveat == cap.EPOCH
