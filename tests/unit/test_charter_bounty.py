"""A bounty vote is built only for an upheld case, to an address, for a positive amount (pure; the CLI test runs
one through the Governor)."""

from __future__ import annotations

import pytest

from westworld.chain import TOKEN
from westworld.charter_cases import CaseResult, bounty_vote
from westworld.errors import CaseRefused
from westworld.vote import VoteBackend

PAYEE = "0x" + "ab" * 20


def case(outcome: str) -> CaseResult:
    return CaseResult(case_id="case:" + "1" * 32, outcome=outcome, summary="s", decided_by=["m1"], audit_seq=7)


def test_an_upheld_case_gets_one_transfer_from_the_treasury() -> None:
    inp = bounty_vote(case("upheld"), PAYEE, 5 * 10**17)
    assert inp.backend is VoteBackend.GOVERNOR and inp.proposal.id == "bounty-111111111111"
    [call] = inp.proposal.calls
    assert (call.target, call.signature, call.args[1]) == (TOKEN, "transfer(address,uint256)", 5 * 10**17)
    assert call.args[0].lower() == PAYEE and call.args[0] != PAYEE  # checksummed
    assert "0.5 WEST" in inp.proposal.title and "audit entry 7" in inp.proposal.body


@pytest.mark.parametrize(("outcome", "to", "amount", "why"), [
    ("dismissed", PAYEE, 1, "only for an upheld case"),
    ("decided by DAO vote", PAYEE, 1, "only for an upheld case"),
    ("upheld", "0x1234", 1, "is not an address"),
    ("upheld", "nobody", 1, "is not an address"),
    ("upheld", PAYEE, 0, "positive amount"),
    ("upheld", PAYEE, -5, "positive amount"),
])
def test_refused(outcome: str, to: str, amount: int, why: str) -> None:
    with pytest.raises(CaseRefused, match=why):
        bounty_vote(case(outcome), to, amount)
