"""The network policy: the security parameters the DAO set, and the floors nobody can go under.

Who decides a security parameter (a quorum, an approval threshold, how many peers must sign a wide action, how
sensitive the anomaly watch is) must never be the party it constrains. So every such parameter comes from here:

* ``NetworkPolicy`` is what the DAO set. Its canonical bytes are hashed (``policy_hash``) and the hash is kept on
  chain (``MeshConfig.parameters(POLICY_HASH_KEY)``, changed only through the Governor and timelock); the worker
  loads the policy file and refuses one whose hash is not the one on chain (see ``activities/policy.py``).
* ``HARD_FLOORS`` are the minimums written in code: a policy file under them is refused even if the DAO
  passed it (a captured DAO must not be able to switch the protections off in one vote).
* A requester or agent may ask for *stricter* than the policy (``stricter_*`` helpers), never looser: a field in
  a start input is only ever combined with the policy through those helpers.

Fractions (quorum, approval) are exact decimals, never rounded to parts per million: a positive quorum can never
turn into zero.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.errors import LOOSER_THAN_POLICY, PermanentError

POLICY_HASH_KEY = "policy.sha256"  # the MeshConfig parameter that holds the hash of the policy in force


class VotePolicy(BaseModel):
    """Floors for every DAO vote (proposals, experiments' votes, shelter access votes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quorum_min: Decimal = Field(Decimal("0.04"), gt=0, le=1, description="Least share of supply that must vote.")
    approval_threshold_min: Decimal = Field(Decimal("0.5"), ge=Decimal("0.5"), lt=1,
                                            description="Approve share of non-abstain weight must exceed this.")
    window_min: timedelta = Field(timedelta(minutes=1), description="Shortest voting window anyone may ask for.")
    window_max: timedelta = Field(timedelta(days=30), description="Longest voting window anyone may ask for.")


class PeerPolicy(BaseModel):
    """When an agent's action is wide, and how many distinct registered peers must sign it then."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_nodes: int = Field(20, ge=0, description="More nodes than this is a wide action.")
    threshold_pct: Decimal = Field(Decimal("1.0"), ge=0, le=100, description="More than this % of live nodes too.")
    peers_required: int = Field(3, ge=1, le=64, description="k: distinct registered peers that must sign.")
    wait_max: timedelta = Field(timedelta(hours=24), description="Longest an action may wait for its peers.")
    discharge_ttl_max: timedelta = Field(timedelta(hours=1), description="Longest a peer's discharge stays valid.")


class WatchPolicy(BaseModel):
    """The loosest the anomaly watch may be set, and who may change or resume it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coverage_critical_pct_max: float = Field(10.0, gt=0, le=100)
    concentration_critical_pct_max: float = Field(20.0, gt=0, le=100)
    rate_high_max: int = Field(100, ge=1)
    denials_high_max: int = Field(20, ge=1)
    poll_interval_max: timedelta = Field(timedelta(minutes=1))
    guardians_required_min: int = Field(2, ge=1, le=64, description="Guardian signatures to resume or reconfigure.")


class ShelterPolicy(BaseModel):
    """Floors for access to sheltered documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    emergency_window_max: timedelta = Field(timedelta(hours=2), description="An emergency request expires by then.")
    share_window_max: timedelta = Field(timedelta(days=7), description="Longest time for k guardians after approval.")
    reminder_every_min: timedelta = Field(timedelta(minutes=10), description="Shortest reminder period (guardians "
                                          "are not flooded; a request's history stays bounded).")
    rotation_window_max: timedelta = Field(timedelta(days=30), description="Longest share or acknowledgement window "
                                           "of a guardian rotation.")
    guardian_threshold_min: int = Field(2, ge=2, le=255, description="Least k of a new key epoch; a rotation keeps "
                                        "the current k unless this is higher (never the starter's choice).")


class NetworkPolicy(BaseModel):
    """What the DAO set. Loaded from a file whose hash is on chain; every field has the documented default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(1, ge=1)
    votes: VotePolicy = Field(default_factory=VotePolicy)
    peers: PeerPolicy = Field(default_factory=PeerPolicy)
    watch: WatchPolicy = Field(default_factory=WatchPolicy)
    shelter: ShelterPolicy = Field(default_factory=ShelterPolicy)

    @model_validator(mode="after")
    def _above_hard_floors(self) -> NetworkPolicy:
        if problems := floor_problems(self):
            raise ValueError("under the hard floors: " + "; ".join(problems))
        return self


def canonical_bytes(policy: NetworkPolicy) -> bytes:
    """The bytes whose SHA-256 goes on chain: sorted keys, no spaces, decimals and durations as strings."""
    return json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def policy_hash(policy: NetworkPolicy) -> str:
    """Hex SHA-256 of the canonical bytes (``0x``-less, lower case), as kept on chain."""
    return hashlib.sha256(canonical_bytes(policy)).hexdigest()


# Written in code, not in the policy: what no DAO vote can go under.
HARD_QUORUM_MIN = Decimal("0.01")
HARD_APPROVAL_MIN = Decimal("0.5")
HARD_PEERS_MIN = 2
HARD_GUARDIANS_MIN = 2


def floor_problems(p: NetworkPolicy) -> list[str]:
    problems = []
    if p.votes.quorum_min < HARD_QUORUM_MIN:
        problems.append(f"votes.quorum_min {p.votes.quorum_min} < {HARD_QUORUM_MIN}")
    if p.votes.approval_threshold_min < HARD_APPROVAL_MIN:
        problems.append(f"votes.approval_threshold_min {p.votes.approval_threshold_min} < {HARD_APPROVAL_MIN}")
    if p.votes.window_min <= timedelta(0) or p.votes.window_max < p.votes.window_min:
        problems.append("votes.window_min must be positive and at most votes.window_max")
    if p.peers.peers_required < HARD_PEERS_MIN:
        problems.append(f"peers.peers_required {p.peers.peers_required} < {HARD_PEERS_MIN}")
    if p.watch.guardians_required_min < HARD_GUARDIANS_MIN:
        problems.append(f"watch.guardians_required_min {p.watch.guardians_required_min} < {HARD_GUARDIANS_MIN}")
    return problems


def as_fraction(value: Decimal | float | str) -> Fraction:
    """An exact fraction of a decimal share; a float is read through its shortest decimal repr (0.04 -> 1/25)."""
    return Fraction(Decimal(str(value)))


def weight_at_least(total: int, share: Fraction) -> int:
    """The least integer weight that is at least ``share`` of ``total`` (exact ceiling; positive share of a
    positive total is at least 1)."""
    return -(-total * share.numerator // share.denominator)


class VoteTermsInForce(BaseModel):
    """The terms a vote runs under: the policy's floors, or the stricter terms its requester asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quorum: Decimal
    approval_threshold: Decimal
    window: timedelta


def refuse_looser(where: str, what: str, asked: object, rule: str, limit: object) -> NoReturn:
    """Raise the typed refusal of a request that asks for less than the policy: it names the field, the value
    asked, the policy's rule and its limit (the CLI and the workflows word it the same way)."""
    raise PermanentError(f"{where}: {what} {asked} is looser than the network policy ({rule} = {limit}); "
                         f"ask for {limit} or stricter, or leave it out to get the policy's", type=LOOSER_THAN_POLICY)


def at_least(where: str, what: str, asked: timedelta | None, rule: str, floor: timedelta) -> timedelta:
    """``asked`` if it is not under ``floor`` (None: the floor); else the typed refusal."""
    if asked is None:
        return floor
    if asked < floor:
        refuse_looser(where, what, asked, rule, floor)
    return asked


def at_most(where: str, what: str, asked: timedelta, rule: str, limit: timedelta) -> timedelta:
    if asked > limit:
        refuse_looser(where, what, asked, rule, limit)
    return asked


def vote_terms_in_force(
    policy: VotePolicy, where: str, *, quorum: Decimal | float | None, approval_threshold: Decimal | float | None,
    window: timedelta | None, default_window: timedelta,
) -> VoteTermsInForce:
    """The terms of a vote someone asked for, against the policy: a quorum or approval threshold under the floor,
    or a window outside ``[window_min, window_max]``, is refused (``LooserThanPolicy``, naming the floor); what is
    not asked for is the policy's (the default window is brought inside the policy's bounds)."""
    q = policy.quorum_min
    if quorum is not None:
        if as_fraction(quorum) < as_fraction(policy.quorum_min):
            refuse_looser(where, "quorum", quorum, "votes.quorum_min", policy.quorum_min)
        q = Decimal(str(quorum))
    a = policy.approval_threshold_min
    if approval_threshold is not None:
        if as_fraction(approval_threshold) < as_fraction(policy.approval_threshold_min):
            refuse_looser(where, "approval threshold", approval_threshold, "votes.approval_threshold_min",
                          policy.approval_threshold_min)
        a = Decimal(str(approval_threshold))
    if window is None:
        w = min(max(default_window, policy.window_min), policy.window_max)
    else:
        w = at_most(where, "voting window", at_least(where, "voting window", window, "votes.window_min",
                                                     policy.window_min), "votes.window_max", policy.window_max)
    return VoteTermsInForce(quorum=q, approval_threshold=a, window=w)
