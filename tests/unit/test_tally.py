"""Tally rules: quorum, approval, and early settlement never contradicting the final decision."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from westworld.tally import Decision, TallyRules, add_vote, decide, empty_tally, recount, settled

CHOICES = ("for", "against", "abstain")


def rules(total: int, quorum: float = 0.04, threshold: float = 0.5) -> TallyRules:
    return TallyRules(choices=CHOICES, total_supply=total, quorum=quorum, approval_threshold=threshold)


def test_no_votes_is_no_quorum() -> None:
    assert decide(empty_tally(CHOICES), rules(100)) is Decision.NO_QUORUM


def test_quorum_counts_abstain_but_approval_ignores_it() -> None:
    t = {"for": 3, "against": 2, "abstain": 95}
    assert decide(t, rules(100, quorum=0.5)) is Decision.APPROVED


def test_tie_is_rejected_at_half_threshold() -> None:
    assert decide({"for": 50, "against": 50, "abstain": 0}, rules(100)) is Decision.REJECTED


def test_quorum_is_exact_on_huge_supplies() -> None:
    total = 10**27
    r = rules(total, quorum=0.04)
    assert r.quorum_weight == 4 * 10**25
    assert decide({"for": 4 * 10**25 - 1, "against": 0, "abstain": 0}, r) is Decision.NO_QUORUM
    assert decide({"for": 4 * 10**25, "against": 0, "abstain": 0}, r) is Decision.APPROVED


def test_changed_vote_moves_weight() -> None:
    t = empty_tally(CHOICES)
    add_vote(t, "for", 10)
    add_vote(t, "against", 10, previous=("for", 10))
    assert t == {"for": 0, "against": 10, "abstain": 0}


def test_majority_settles_early() -> None:
    assert settled({"for": 51, "against": 0, "abstain": 0}, rules(100)) is Decision.APPROVED
    assert settled({"for": 49, "against": 0, "abstain": 0}, rules(100)) is None
    assert settled({"for": 0, "against": 50, "abstain": 0}, rules(100)) is Decision.REJECTED


votes = st.lists(st.tuples(st.sampled_from(CHOICES), st.integers(min_value=1, max_value=10**24)), max_size=30)


@given(votes=votes, extra=st.lists(st.tuples(st.sampled_from(CHOICES), st.integers(1, 10**24)), max_size=30),
       quorum=st.sampled_from([0.01, 0.04, 0.2, 0.5]), threshold=st.sampled_from([0.5, 0.6, 0.66]))
def test_settled_decision_is_final(
    votes: list[tuple[str, int]], extra: list[tuple[str, int]], quorum: float, threshold: float
) -> None:
    """Whatever the remaining holders do, an early settlement equals the decision at the deadline."""
    total = sum(w for _, w in votes) + sum(w for _, w in extra)
    if total == 0:
        return
    r = rules(total, quorum, threshold)
    t = empty_tally(CHOICES)
    for c, w in votes:
        add_vote(t, c, w)
    early = settled(t, r)
    for c, w in extra:
        add_vote(t, c, w)
    if early is not None:
        assert decide(t, r) is early


def test_for_approves_whatever_its_position() -> None:
    """The governor backend orders choices by OZ support value: against, for, abstain."""
    r = TallyRules(choices=("against", "for", "abstain"), total_supply=100, quorum=0.04, approval_threshold=0.5)
    assert decide({"against": 10, "for": 55, "abstain": 5}, r) is Decision.APPROVED
    assert settled({"against": 10, "for": 55, "abstain": 5}, r) is Decision.APPROVED


def test_a_tiny_quorum_is_never_rounded_to_zero() -> None:
    """Parts-per-million rounding once turned ``--quorum 0.0000001`` into no quorum at all."""
    r = rules(10**6, quorum=0.0000001)
    assert r.quorum == Fraction(1, 10**7) and r.quorum_weight == 1
    assert decide(empty_tally(CHOICES), r) is Decision.NO_QUORUM
    assert rules(10**24, quorum=0.0000001).quorum_weight == 10**17


def test_approval_is_exact_beyond_parts_per_million() -> None:
    """0.5000001 approval: 5,000,001 of 10,000,000 is not more than it; 5,000,002 is."""
    r = rules(10**7, quorum=0.04, threshold=0.5000001)
    assert decide({"for": 5_000_001, "against": 4_999_999, "abstain": 0}, r) is Decision.REJECTED
    assert decide({"for": 5_000_002, "against": 4_999_998, "abstain": 0}, r) is Decision.APPROVED


@given(ballots=st.lists(st.tuples(st.sampled_from(CHOICES), st.integers(0, 10**24)), max_size=40))
def test_recount_equals_adding_each_ballot(ballots: list[tuple[str, int]]) -> None:
    t = empty_tally(CHOICES)
    for c, w in ballots:
        add_vote(t, c, w)
    assert recount(CHOICES, ballots) == t
