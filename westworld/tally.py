"""Tally rules: weights per choice, quorum, approval, and when the outcome can no longer change.

Shares (quorum, approval threshold) are exact fractions (``westworld.policy.as_fraction``), never rounded: a
positive quorum always asks for at least one unit of weight, and ``0.5`` approval means strictly more than half.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from westworld.policy import as_fraction, weight_at_least

ABSTAIN = "abstain"
APPROVE = "for"


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    NO_QUORUM = "no-quorum"


def _exact(share: Fraction | Decimal | float | str) -> Fraction:
    return share if isinstance(share, Fraction) else as_fraction(share)


@dataclass(frozen=True, init=False)
class TallyRules:
    """How a vote is decided. ``for`` approves if it is a choice, else ``choices[0]``; ``abstain`` counts toward
    quorum only. ``quorum`` and ``approval_threshold`` are kept as exact fractions whatever they are given as."""

    choices: tuple[str, ...]
    total_supply: int
    quorum: Fraction
    approval_threshold: Fraction

    def __init__(self, choices: tuple[str, ...], total_supply: int, quorum: Fraction | Decimal | float | str,
                 approval_threshold: Fraction | Decimal | float | str) -> None:
        object.__setattr__(self, "choices", tuple(choices))
        object.__setattr__(self, "total_supply", total_supply)
        object.__setattr__(self, "quorum", _exact(quorum))
        object.__setattr__(self, "approval_threshold", _exact(approval_threshold))

    @property
    def approve(self) -> str:
        return APPROVE if APPROVE in self.choices else self.choices[0]

    @property
    def quorum_weight(self) -> int:
        """The least weight that meets quorum (exact ceiling; at least 1 for a positive quorum and supply)."""
        return weight_at_least(self.total_supply, self.quorum)


def empty_tally(choices: tuple[str, ...] | list[str]) -> dict[str, int]:
    return dict.fromkeys(choices, 0)


def add_vote(tally: dict[str, int], choice: str, weight: int, *, previous: tuple[str, int] | None = None) -> None:
    """Add ``weight`` to ``choice``; when a vote is changed, remove its ``previous`` (choice, weight) first."""
    if weight < 0:
        raise ValueError("weight must be non-negative")
    if previous is not None:
        tally[previous[0]] -= previous[1]
    tally[choice] += weight


def recount(choices: tuple[str, ...] | list[str], ballots: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The tally of the current ballots, one (choice, weight) per voter."""
    tally = empty_tally(choices)
    for choice, weight in ballots:
        tally[choice] += weight
    return tally


def cast_weight(tally: dict[str, int]) -> int:
    return sum(tally.values())


def _passes(approve: int, decisive: int, threshold: Fraction) -> bool:
    # approve / decisive > threshold, exactly.
    return decisive > 0 and approve * threshold.denominator > decisive * threshold.numerator


def approve_share(tally: dict[str, int], rules: TallyRules) -> float:
    decisive = cast_weight(tally) - tally.get(ABSTAIN, 0)
    return tally[rules.approve] / decisive if decisive else 0.0


def decide(tally: dict[str, int], rules: TallyRules) -> Decision:
    """The decision when voting closes with this tally."""
    if cast_weight(tally) < rules.quorum_weight or cast_weight(tally) == 0:
        return Decision.NO_QUORUM
    decisive = cast_weight(tally) - tally.get(ABSTAIN, 0)
    return Decision.APPROVED if _passes(tally[rules.approve], decisive, rules.approval_threshold) else Decision.REJECTED


def settled(tally: dict[str, int], rules: TallyRules) -> Decision | None:
    """The decision if no remaining voting power could change it, else None (allows an early close).

    Remaining power is everything not yet cast at the snapshot. A vote is settled as approved when quorum is
    met and approval holds even if all remaining power rejects; as rejected when approval fails even if all
    remaining power approves. No-quorum is never settled early: anyone may still vote.
    """
    cast = cast_weight(tally)
    remaining = max(rules.total_supply - cast, 0)
    decisive = cast - tally.get(ABSTAIN, 0)
    approve = tally[rules.approve]
    if cast >= rules.quorum_weight and cast > 0 and _passes(approve, decisive + remaining, rules.approval_threshold):
        return Decision.APPROVED
    if not _passes(approve + remaining, decisive + remaining, rules.approval_threshold):
        # Rejected whatever happens; quorum is reachable or not, but a rejection stands either way
        # only if quorum is met already, otherwise the honest answer is still open (could be no-quorum).
        return Decision.REJECTED if cast >= rules.quorum_weight else None
    return None
