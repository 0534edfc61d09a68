"""EIP-712 ballots: signatures verify for their voter only; forgeries, swaps and garbage are refused."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import ballot
from westworld.errors import VOTE_BAD_CHOICE, VOTE_BAD_SIGNATURE, VoteRejected
from westworld.vote import VoteBackend, VoteRequest

ALICE = Account.create("alice")
MALLORY = Account.create("mallory")

CONTEXTS = {
    VoteBackend.OFFCHAIN: ballot.BallotContext(backend=VoteBackend.OFFCHAIN, chain_id=31337, proposal_id="p-1",
                                               choices=["for", "against", "abstain"]),
    VoteBackend.GOVERNOR: ballot.BallotContext(
        backend=VoteBackend.GOVERNOR, chain_id=31337, proposal_id="p-1", choices=["against", "for", "abstain"],
        governor="0x5FbDB2315678afecb367f032d93F642f64180aa3", governor_name="Westworld Governor",
        onchain_id=str(2**255 + 7)),
    VoteBackend.SNAPSHOT: ballot.BallotContext(backend=VoteBackend.SNAPSHOT, chain_id=1, proposal_id="p-1",
                                               choices=["for", "against"], snapshot_space="westworld.eth"),
}


def signed(ctx: ballot.BallotContext, choice: str = "for", key: str = ALICE.key.hex(), voter: str = ALICE.address,
           **kw: object) -> VoteRequest:
    v = VoteRequest(proposal_id="p-1", voter=voter, choice=choice, signature="0x", timestamp=1_700_000_000, **kw)
    return v.model_copy(update={"signature": ballot.sign(v, ctx, key)})


@pytest.mark.parametrize("backend", list(CONTEXTS))
def test_own_signature_verifies(backend: VoteBackend) -> None:
    vote = signed(CONTEXTS[backend])
    assert ballot.verify(vote, CONTEXTS[backend]) == ballot.vote_hash(vote, CONTEXTS[backend])


@pytest.mark.parametrize("backend", list(CONTEXTS))
def test_signature_by_someone_else_is_refused(backend: VoteBackend) -> None:
    vote = signed(CONTEXTS[backend], key=MALLORY.key.hex())
    with pytest.raises(VoteRejected, match="does not match voter") as exc:
        ballot.verify(vote, CONTEXTS[backend])
    assert exc.value.type == VOTE_BAD_SIGNATURE


def test_changed_choice_after_signing_is_refused() -> None:
    ctx = CONTEXTS[VoteBackend.OFFCHAIN]
    vote = signed(ctx).model_copy(update={"choice": "against"})
    with pytest.raises(VoteRejected) as exc:
        ballot.verify(vote, ctx)
    assert exc.value.type == VOTE_BAD_SIGNATURE


def test_signature_for_another_proposal_is_refused() -> None:
    ctx = CONTEXTS[VoteBackend.OFFCHAIN]
    other = ctx.model_copy(update={"proposal_id": "p-2"})
    vote = signed(other)
    with pytest.raises(VoteRejected):
        ballot.verify(vote, ctx)


def test_unknown_choice_is_named() -> None:
    ctx = CONTEXTS[VoteBackend.OFFCHAIN]
    vote = VoteRequest(proposal_id="p-1", voter=ALICE.address, choice="maybe", signature="0x00")
    with pytest.raises(VoteRejected, match="'maybe' is not one of") as exc:
        ballot.verify(vote, ctx)
    assert exc.value.type == VOTE_BAD_CHOICE


@settings(max_examples=200)
@given(sig=st.binary(max_size=80))
def test_garbage_signatures_never_verify(sig: bytes) -> None:
    ctx = CONTEXTS[VoteBackend.OFFCHAIN]
    vote = VoteRequest(proposal_id="p-1", voter=ALICE.address, choice="for", signature="0x" + sig.hex())
    with pytest.raises(VoteRejected) as exc:
        ballot.verify(vote, ctx)
    assert exc.value.type == VOTE_BAD_SIGNATURE

