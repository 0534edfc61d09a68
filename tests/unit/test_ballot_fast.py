"""The ballot check's direct route (own EIP-712 encoding, coincurve recovery) answers exactly as eth_account's.

For random ballots of every backend — valid, signed by someone else, with v written as 0/1, 27/28 or EIP-155,
r or s out of range, garbage or odd-length signatures, out-of-range integers, any Unicode including lone
surrogates — :func:`ballot.verify` and :func:`ballot.vote_hash` must give what the eth_account-only
implementation (kept here as the reference) gives: the same hash, or the same refusal type and message, or the
same exception.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from westworld import ballot
from westworld.errors import VOTE_BAD_SIGNATURE, VoteRejected
from westworld.vote import GOVERNOR_CHOICES, VoteBackend, VoteRequest

KEYS = [Account.from_key(bytes([i + 1]) * 32) for i in range(4)]
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)


def reference_verify(vote: VoteRequest, ctx: ballot.BallotContext) -> str:
    """The check as it was before the direct route: eth_account's encoding and recovery only."""
    digest = ballot._digest(ballot._signable(vote, ctx))
    try:
        signature = bytes.fromhex(vote.signature.removeprefix("0x"))
        signer = Account._recover_hash(digest, signature=signature)
    except Exception as exc:
        raise VoteRejected(f"signature of {vote.voter} is malformed: {exc}", type=VOTE_BAD_SIGNATURE) from exc
    if signer.lower() != vote.voter.lower():
        raise VoteRejected(
            f"signature does not match voter {vote.voter} (it was made by {signer.lower()}) on proposal "
            f"{ctx.proposal_id}",
            type=VOTE_BAD_SIGNATURE,
        )
    return "0x" + digest.hex()


def outcome(check: Any, vote: VoteRequest, ctx: ballot.BallotContext) -> tuple[str, ...]:
    try:
        return ("ok", check(vote, ctx))
    except VoteRejected as err:
        return ("refused", err.type, err.message)
    except Exception as err:
        return ("error", type(err).__name__, str(err))


@st.composite
def contexts(draw: st.DrawFn) -> ballot.BallotContext:
    backend = draw(st.sampled_from(list(VoteBackend)))
    proposal = draw(st.one_of(st.just("p-1"), ANY_TEXT))
    if backend is VoteBackend.GOVERNOR:
        choices = draw(st.permutations(list(GOVERNOR_CHOICES)))
        if draw(st.integers(0, 7)) == 0:
            choices = [*choices, draw(ANY_TEXT)]  # a choice the Governor has no support value for
        governor = draw(st.sampled_from([KEYS[3].address] * 4 + [KEYS[3].address.lower(), "0x1234", None]))
        return ballot.BallotContext(
            backend=backend, chain_id=draw(st.integers(0, 2**64)), proposal_id=proposal, choices=choices,
            governor=governor, governor_name=draw(st.one_of(st.none(), ANY_TEXT)),
            onchain_id=draw(st.sampled_from(["42", str(2**256 - 1), "0", None, str(2**256), "12x"])))
    choices = draw(st.lists(ANY_TEXT, min_size=1, max_size=4, unique=True))
    return ballot.BallotContext(
        backend=backend, chain_id=draw(st.integers(0, 2**64)), proposal_id=proposal, choices=choices,
        snapshot_space=draw(st.one_of(st.none(), ANY_TEXT)), snapshot_proposal=draw(st.one_of(st.none(), ANY_TEXT)))


def _with_v(sig: bytes, v: int) -> str:
    return "0x" + (sig[:64] + bytes((v,))).hex()


@st.composite
def ballots(draw: st.DrawFn) -> tuple[VoteRequest, ballot.BallotContext]:
    ctx = draw(contexts())
    voter = draw(st.sampled_from(KEYS[:3]))
    choice = draw(ANY_TEXT) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(ctx.choices))
    vote = VoteRequest(proposal_id=ctx.proposal_id, voter=voter.address, choice=choice, signature="0x",
                       reason=draw(ANY_TEXT), nonce=draw(st.sampled_from([0, 1, 7, 0, 1, 2**64, 2**256 - 1, 2**256])),
                       timestamp=draw(st.sampled_from([0, 1_700_000_000] * 3 + [2**64 - 1, 2**64, 2**70])))
    signer = draw(st.sampled_from([voter, voter, KEYS[3]]))
    try:
        good = bytes.fromhex(ballot.sign(vote, ctx, signer.key.hex())[2:])
    except Exception:  # what cannot be encoded cannot be signed: any 65 bytes then
        good = draw(st.binary(min_size=65, max_size=65))
    v = good[64]
    kind = draw(st.sampled_from(["as signed"] * 4 + ["v 0/1", "eip155", "bad v", "high r", "high s", "zero r",
                                 "garbage", "odd hex", "no 0x", "upper hex"]))
    if kind == "as signed":
        signature = "0x" + good.hex()
    elif kind == "v 0/1":
        signature = _with_v(good, v - 27 if v >= 27 else v)
    elif kind == "eip155":
        signature = _with_v(good, 35 + 2 * draw(st.integers(0, 100)) + (v - 27) % 2)
    elif kind == "bad v":
        signature = _with_v(good, draw(st.sampled_from([2, 26, 29, 34])))
    elif kind == "high r":
        signature = "0x" + (draw(st.integers(N, 2**256 - 1)).to_bytes(32, "big") + good[32:]).hex()
    elif kind == "high s":
        signature = "0x" + (good[:32] + draw(st.integers(N, 2**256 - 1)).to_bytes(32, "big") + good[64:]).hex()
    elif kind == "zero r":
        signature = "0x" + (bytes(32) + good[32:]).hex()
    elif kind == "garbage":
        signature = "0x" + draw(st.binary(max_size=70)).hex()
    elif kind == "odd hex":
        signature = "0x" + good.hex()[:-1]
    elif kind == "no 0x":
        signature = good.hex()
    else:
        signature = "0x" + good.hex().upper()
    return vote.model_copy(update={"signature": signature}), ctx


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=ballots())
def test_direct_route_answers_as_eth_account(case: tuple[VoteRequest, ballot.BallotContext]) -> None:
    vote, ctx = case
    expected = outcome(reference_verify, vote, ctx)
    event(f"{ctx.backend.value}: {expected[0]} {expected[1] if expected[0] != 'ok' else ''}")
    assert outcome(ballot.verify, vote, ctx) == expected
    assert outcome(ballot.vote_hash, vote, ctx) == outcome(
        lambda v, c: "0x" + ballot._digest(ballot._signable(v, c)).hex(), vote, ctx)


@pytest.mark.parametrize("backend", list(VoteBackend))
def test_valid_ballots_take_the_direct_route(backend: VoteBackend) -> None:
    """The speed is real only if ordinary ballots do not fall back: the direct route alone recovers them."""
    ctx = ballot.BallotContext(backend=backend, chain_id=31337, proposal_id="p-1", choices=list(GOVERNOR_CHOICES),
                               governor=KEYS[3].address, governor_name="Westworld Governor", onchain_id="42",
                               snapshot_space="westworld.eth")
    vote = VoteRequest(proposal_id="p-1", voter=KEYS[0].address, choice="for", signature="0x", reason="é ✓",
                       nonce=3, timestamp=1_700_000_000)
    vote = vote.model_copy(update={"signature": ballot.sign(vote, ctx, KEYS[0].key.hex())})
    direct = ballot.digest(vote, ctx)
    assert direct == ballot._digest(ballot._signable(vote, ctx))
    assert ballot._recover_direct(direct, vote.signature) == KEYS[0].address.lower()
