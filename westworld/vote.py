"""Models of a DAO vote: the proposal, the workflow's input, a signed vote, the live state and the result; and
the rules in force for a vote (the requester's terms checked against the DAO's policy: stricter, never looser)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from westworld.amounts import Amount
from westworld.chain import ChainSnapshot, GovernorProposal, OnChainCall
from westworld.durations import Duration
from westworld.policy import VotePolicy, as_fraction, vote_terms_in_force

PROPOSAL_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ADDRESS_PATTERN = re.compile(r"^0x[0-9a-fA-F]{40}$")
GOVERNOR_CHOICES = ("against", "for", "abstain")  # index = Governor `support` value


class VoteKind(StrEnum):
    NORMAL = "normal"
    EMERGENCY = "emergency"


class VoteBackend(StrEnum):
    """Where the vote lives: tallied here only, on the Governor, or published to a Snapshot hub."""

    OFFCHAIN = "offchain"
    GOVERNOR = "governor"
    SNAPSHOT = "snapshot"


DEFAULT_WINDOWS = {VoteKind.NORMAL: timedelta(hours=72), VoteKind.EMERGENCY: timedelta(hours=2)}


class Proposal(BaseModel):
    """What the DAO is asked. ``for`` (or else the first choice) approves; an ``abstain`` choice counts toward
    quorum only."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=PROPOSAL_ID_PATTERN, description="Business key, e.g. 'mesh-mtu-1400'.")
    title: str = Field(min_length=1, max_length=200)
    body: str = ""
    evidence_url: str | None = None
    choices: list[str] = Field(default_factory=lambda: ["for", "against", "abstain"], min_length=2)
    allow_vote_change: bool = False
    calls: list[OnChainCall] = Field(default_factory=list, description="Executed through the timelock if passed.")

    @field_validator("choices")
    @classmethod
    def _unique_choices(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("choices must be distinct")
        return v


class VoteCarry(BaseModel):
    """State the first version of the workflow carried across continue-as-new in its input. Kept only so those
    saved histories still decode and replay: a start that carries it is refused (``INJECTED_STATE``); a continued
    run now rebuilds its state from the vote store."""

    snapshot: ChainSnapshot
    governor: GovernorProposal | None = None
    snapshot_proposal: str | None = None
    deadline: datetime
    tally: dict[str, Amount]
    votes: int
    rejected: int
    run: int


class DaoVoteInput(BaseModel):
    """Input of ``DaoVoteWorkflow``: one JSON object, startable from the Temporal UI."""

    model_config = ConfigDict(extra="forbid")

    proposal: Proposal
    kind: VoteKind = VoteKind.NORMAL
    voting_window: Duration | None = Field(
        None, description="Default 72 h (normal) or 2 h (emergency); within the policy's votes.window_min/max.")
    quorum: float | None = Field(
        None, gt=0, le=1, description="Share of total voting power at the snapshot; default and least: the "
        "policy's votes.quorum_min (a lower one is refused).")
    approval_threshold: float | None = Field(
        None, ge=0, lt=1, description="Approve share of non-abstain weight must exceed this; default and least: "
        "the policy's votes.approval_threshold_min.")
    backend: VoteBackend = VoteBackend.OFFCHAIN
    early_close: bool = True
    snapshot_space: str = Field("westworld.eth", description="Snapshot space (backend snapshot); must be the "
                                "worker's WESTWORLD_SNAPSHOT_SPACE.")
    continue_after_votes: int = Field(
        1000, ge=10, le=1500,
        description="Votes per run before continue-as-new (Temporal admits at most 2,000 updates per run).",
    )
    carry: VoteCarry | None = Field(None, description="Never set it: internal state of old runs (refused).")

    @property
    def window(self) -> timedelta:
        return DEFAULT_WINDOWS[self.kind] if self.voting_window is None else self.voting_window

    @field_validator("voting_window")
    @classmethod
    def _positive_window(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError(f"a voting window must be positive (got {v}); leave it out for the default")
        return v

    @model_validator(mode="after")
    def _governor_choices(self) -> DaoVoteInput:
        if self.backend is VoteBackend.GOVERNOR and set(self.proposal.choices) != set(GOVERNOR_CHOICES):
            raise ValueError("proposal.choices: the governor backend takes exactly for, against, abstain")
        if self.proposal.calls and self.backend is not VoteBackend.GOVERNOR:
            raise ValueError("proposal.calls: on-chain calls need backend 'governor'")
        return self


class VoteRequest(BaseModel):
    """A signed vote, submitted through the workflow's ``cast_vote`` update."""

    model_config = ConfigDict(extra="forbid")

    proposal_id: str
    voter: str
    choice: str
    reason: str = ""
    signature: str = Field(description="0x-prefixed 65-byte EIP-712 signature.")
    nonce: int = Field(0, ge=0, description="Governor ballot nonce (governor backend).")
    timestamp: int = Field(0, ge=0, description="Signing time, unix seconds (snapshot backend).")

    @field_validator("voter")
    @classmethod
    def _address(cls, v: str) -> str:
        if not ADDRESS_PATTERN.match(v):
            raise ValueError(f"voter: {v!r} is not a 0x-prefixed 20-byte address")
        return v.lower()


class VoteReceipt(BaseModel):
    vote_hash: str
    voter: str
    choice: str
    weight: Amount
    replaced_choice: str | None = None


class RecordVoteInput(BaseModel):
    """Activity input: weigh a verified vote at the snapshot and store it (and relay it for the governor)."""

    request: VoteRequest
    vote_hash: str
    timepoint: int
    allow_change: bool
    governor: GovernorProposal | None = None
    support: int | None = None
    snapshot_typed_data: dict[str, Any] | None = Field(
        None, description="Backend snapshot: the signed Vote message, forwarded to the hub with the signature."
    )


class RecordVoteResult(BaseModel):
    """The outcome of one vote: its weight, the vote it replaced, or why it was refused (``error_type``).

    A ballot sent again (the same vote hash) answers as it did the first time (``repeat``) and changes nothing."""

    weight: Amount
    choice: str | None = None
    previous_choice: str | None = None
    previous_weight: Amount | None = None
    repeat: bool = False
    error_type: str | None = None
    error: str | None = None


class VoteCount(BaseModel):
    """A proposal's tally as the vote store holds it (always equal to a recount of the stored ballots)."""

    tally: dict[str, Amount]
    votes: int = Field(description="Voters with a ballot counted.")
    rejected: int = 0


class RecordVotesInput(BaseModel):
    votes: list[RecordVoteInput]
    proposal_id: str | None = Field(None, description="Set by runs that keep the tally in the store (all new ones).")
    first_run_id: str | None = Field(None, description="The vote execution that opened the proposal.")


class RecordVotesResult(BaseModel):
    outcomes: list[RecordVoteResult]
    count: VoteCount | None = Field(None, description="The proposal's tally after the batch (store-kept runs).")


class VoteRules(BaseModel):
    """The rules in force for one vote, fixed when it opens: the requester's terms, never looser than the policy.
    Shares are exact fractions written as ``"p/q"``."""

    model_config = ConfigDict(frozen=True)

    quorum: str
    approval_threshold: str
    window: timedelta

    @property
    def quorum_fraction(self) -> Fraction:
        return Fraction(self.quorum)

    @property
    def approval_fraction(self) -> Fraction:
        return Fraction(self.approval_threshold)


def rules_in_force(inp: DaoVoteInput, policy: VotePolicy) -> VoteRules:
    """The requester's quorum, approval and window checked against the DAO's floors (what is left out is the
    policy's; the default window is kept inside the policy's bounds).

    Raises:
        WestworldError: (type ``LOOSER_THAN_POLICY``) a term asks for less than the policy allows, naming the rule.
    """
    terms = vote_terms_in_force(policy, f"proposal {inp.proposal.id}", quorum=inp.quorum,
                                approval_threshold=inp.approval_threshold, window=inp.voting_window,
                                default_window=inp.window)
    return VoteRules(quorum=str(as_fraction(terms.quorum)),
                     approval_threshold=str(as_fraction(terms.approval_threshold)), window=terms.window)


class VoteOpening(BaseModel):
    """What the first run of a vote decided when it opened, stored once: every later run of the same execution
    chain reads it back from the store (nothing of it travels in a workflow input)."""

    proposal_id: str
    first_run_id: str
    snapshot: ChainSnapshot
    governor: GovernorProposal | None = None
    snapshot_proposal: str | None = None
    deadline: datetime
    rules: VoteRules
    intake: bool = Field(False, description="Opened by a run that takes votes from the vote intake (HTTP) too; "
                         "the fields below are what the intake rebuilds the ballot context from.")
    backend: VoteBackend | None = None
    choices: list[str] | None = None
    snapshot_space: str | None = None
    allow_vote_change: bool = False


class IntakeProposal(BaseModel):
    """What the vote intake reads of a proposal from the store: its owner, its opening, and whether the vote
    closed it (no ballot is recorded after that)."""

    workflow_id: str
    opening: VoteOpening
    closed: bool


class ClaimProposalInput(BaseModel):
    """The first run of a vote takes its proposal id before anything happens on chain."""

    proposal_id: str
    first_run_id: str
    workflow_id: str
    choices: list[str]


class LoadOpeningInput(BaseModel):
    proposal_id: str
    first_run_id: str


class LoadedVote(BaseModel):
    """A continued run's state, rebuilt from the store."""

    opening: VoteOpening
    count: VoteCount


class VoteState(StrEnum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"
    EXECUTING = "executing"
    DONE = "done"


class DaoVoteStatus(BaseModel):
    """The live view returned by the ``status`` query."""

    proposal_id: str
    state: VoteState
    step: str
    deadline: datetime | None
    tally: dict[str, Amount] = Field(description="Weight (wei) per choice.")
    votes: int
    rejected: int
    total_supply: Amount
    quorum_weight: Amount
    decided: str | None = None


class DaoVoteResult(BaseModel):
    proposal_id: str
    decision: str = Field(description="'approved', 'rejected' or 'no-quorum'.")
    tally: dict[str, Amount] = Field(description="Weight (wei) per choice.")
    votes: int
    turnout: float
    quorum_met: bool
    approve_share: float
    closed_early: bool
    votes_root: str = Field(description="RFC 6962 root over the accepted votes' hashes (ordered by voter).")
    audit_seq: int
    executed_tx: str | None = None
    onchain_state: str | None = None
    snapshot_proposal: str | None = None
    snapshot_scores: list[float] | None = Field(None, description="Scores the Snapshot hub reports, per choice.")
    rules: VoteRules | None = Field(None, description="The rules in force: the policy's floors or stricter.")
