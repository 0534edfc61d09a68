"""Anonymous violation reports and their cases (pure): receipt codes, proof of work, and the case's models.

A reporter's client (``westworld charter report submit``) seals the report to the committee's X25519 key (a
libsodium sealed box, so not even the sender's public key travels) and draws a random **receipt code**, which only
the reporter ever holds. From the code it derives:

* the receipt hash (SHA-256), whose first 32 hex name the case (``case:<hash>``): the code itself is never sent;
* an X25519 key pair the committee's questions are sealed to, and an Ed25519 key pair the reporter signs answers
  with. Both public keys are random-looking and tied to nothing but the code.

Nothing identifying enters the workflow: no address, no key of the reporter's, no IP (Temporal does not record
the caller's address; the client's ``identity`` is set to a fixed word). Spam is held off by a hashcash-style proof
of work over the sealed report (difficulty: the charter's ``reports.pow_bits``) and the intake's rate limit.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum

from eth_utils.address import is_address, to_checksum_address
from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field

from westworld.chain import TOKEN, TOKEN_SYMBOL, OnChainCall
from westworld.charter_rights import HEX32, CaseAction, sha256_hex
from westworld.errors import CaseRefused, ReportRefused
from westworld.vote import GOVERNOR_CHOICES, DaoVoteInput, Proposal, VoteBackend

MAX_SEALED = 64 * 1024  # base64 characters of a sealed report, note or answer
SEALED_B64 = r"^[A-Za-z0-9+/=_-]{48,65536}$"


def receipt_hash(code: str) -> str:
    return sha256_hex(f"westworld-receipt/v1\n{code}")


def _seed(code: str, use: str) -> bytes:
    return hashlib.sha256(f"westworld-receipt-key/v1\n{use}\n{code}".encode()).digest()


def reporter_box_key(code: str) -> PrivateKey:
    """The reporter's X25519 key (questions are sealed to its public half)."""
    return PrivateKey(_seed(code, "box"))


def reporter_sign_key(code: str) -> SigningKey:
    """The reporter's Ed25519 key (answers are signed with it)."""
    return SigningKey(_seed(code, "sign"))


def answer_message(case_id: str, sealed: str) -> bytes:
    return f"westworld-answer/v1\n{case_id}\n{sha256_hex(sealed)}".encode()


def verify_answer(case_id: str, sealed: str, signature: str, verify_key: str) -> None:
    try:
        VerifyKey(bytes.fromhex(verify_key)).verify(answer_message(case_id, sealed), bytes.fromhex(signature))
    except (BadSignatureError, ValueError) as exc:
        raise CaseRefused(f"the answer on {case_id} is not signed with the reporter's receipt key") from exc


# -- proof of work -------------------------------------------------------------------------------------------

def pow_digest(receipt: str, sealed: str, nonce: int) -> bytes:
    return hashlib.sha256(f"westworld-report-pow/v1\n{receipt}\n{sha256_hex(sealed)}\n{nonce}".encode()).digest()


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def check_pow(receipt: str, sealed: str, nonce: int, bits: int) -> None:
    got = leading_zero_bits(pow_digest(receipt, sealed, nonce))
    if got < bits:
        raise ReportRefused(f"the report's proof of work has {got} leading zero bits; the charter asks for {bits} "
                            "(the `report submit` command computes it)")


def solve_pow(receipt: str, sealed: str, bits: int) -> int:
    """The first nonce meeting ``bits`` (about 2**bits hashes; the reporter's client runs it)."""
    nonce = 0
    while leading_zero_bits(pow_digest(receipt, sealed, nonce)) < bits:
        nonce += 1
    return nonce


# -- intake and case models ----------------------------------------------------------------------------------

class ReportSubmission(BaseModel):
    """What a reporter sends: only sealed or random-looking values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sealed_report: str = Field(pattern=SEALED_B64, description="The report sealed to the committee's key (base64).")
    receipt_hash: str = Field(pattern=HEX32)
    reporter_box_key: str = Field(pattern=HEX32, description="X25519 public key derived from the receipt code.")
    reporter_verify_key: str = Field(pattern=HEX32, description="Ed25519 public key derived from the receipt code.")
    pow_nonce: int = Field(ge=0, lt=2**63)


class CaseSource(StrEnum):
    REPORTER = "reporter"
    SYSTEM = "system"  # a violation the system found itself (an export overdue, a forbidden metric seen)


class CaseInput(BaseModel):
    """Input of ViolationReportWorkflow (started by the intake, or by a workflow that found a violation)."""

    model_config = ConfigDict(extra="forbid")

    sealed_report: str = Field(pattern=SEALED_B64)
    receipt_hash: str = Field(pattern=HEX32)
    source: CaseSource = CaseSource.REPORTER
    reporter_box_key: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    reporter_verify_key: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    pow_nonce: int = Field(0, ge=0, lt=2**63)
    acknowledge_within: timedelta = Field(timedelta(hours=24), description="The committee acknowledges by then.")
    decide_within: timedelta = Field(timedelta(hours=72), description="Decided by then, else escalated to the DAO.")
    remind_every: timedelta = Field(timedelta(hours=12), description="Reminders to the committee until decided.")


class CaseNote(BaseModel):
    """A committee note: sealed to the committee (internal) or to the reporter's box key (a question)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: CaseAction
    sealed: str = Field(pattern=SEALED_B64)
    to_reporter: bool = False


class ReporterAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sealed: str = Field(pattern=SEALED_B64, description="The answer sealed to the committee's key.")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 over answer_message(), hex.")


class CaseDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: CaseAction  # action decide:<outcome>, digest = SHA-256 of summary
    summary: str = Field(min_length=1, max_length=1000, description="The redacted outcome, published as is.")


class CaseEntry(BaseModel):
    at: datetime
    kind: str  # note | question | answer
    by: str  # a member's address, or "reporter"
    sealed: str


class CaseState(BaseModel):
    case_id: str
    source: CaseSource
    step: str
    opened_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    deadline: datetime
    claimed_by: list[str] = Field(default_factory=list)
    entries: list[CaseEntry] = Field(default_factory=list)
    decision_signatures: dict[str, tuple[str, str]] = Field(default_factory=dict)
    threshold: int
    outcome: str = ""
    summary: str = ""
    decided_by: list[str] = Field(default_factory=list)
    escalated_to: str = ""
    reminders: int = 0
    reporter_box_key: str = Field("", description="Questions to the reporter are sealed to it (random, derived "
                                  "from their receipt code).")


class CaseResult(BaseModel):
    case_id: str
    outcome: str
    summary: str
    decided_by: list[str]
    escalated_to: str = ""
    audit_seq: int


class IntakeState(BaseModel):
    accepted: int = 0
    window_start: datetime | None = None
    in_window: int = 0


class CaseCommittee(BaseModel):
    """What a case needs of the charter in force (read by an activity at the case's start)."""

    members: list[str]
    threshold: int
    pow_bits: int
    per_hour: int
    committee_public_key: str
    chain_id: int
    charter_address: str
    charter_version: int


class IntakeInput(BaseModel):
    """Input of ViolationIntakeWorkflow (id ``charter-reports``; clients send with update-with-start)."""

    model_config = ConfigDict(extra="forbid")

    continue_after: int = Field(500, ge=10, le=1000, description="Reports per run before continue-as-new.")


def rate_refusal(state: IntakeState, now: datetime, per_hour: int) -> str | None:
    """Why the intake cannot take one more report at ``now`` (a fixed one-hour window), or None."""
    if state.window_start is not None and now - state.window_start < timedelta(hours=1) \
            and state.in_window >= per_hour:
        return (f"the intake took its {per_hour} reports this hour (the charter's reports.per_hour): try again "
                f"after {(state.window_start + timedelta(hours=1)).isoformat()}")
    return None


def count_report(state: IntakeState, now: datetime) -> None:
    if state.window_start is None or now - state.window_start >= timedelta(hours=1):
        state.window_start, state.in_window = now, 0
    state.in_window += 1
    state.accepted += 1


def bounty_vote(case: CaseResult, to: str, amount: int, proposal_id: str | None = None) -> DaoVoteInput:
    """The governor-backend DAO vote paying a bounty for an upheld case: ``amount`` (wei) of the token from the DAO
    treasury (the timelock, which executes the call) to ``to`` — an address the reporter chose, sent to the
    committee in a sealed answer (a fresh one keeps the reporter anonymous). The DAO decides by voting on it; this
    only refuses what can never be paid rightly."""
    if case.outcome != "upheld":
        raise CaseRefused(f"{case.case_id} was decided {case.outcome!r}: a bounty is paid only for an upheld case")
    if not is_address(to):
        raise CaseRefused(f"{to!r} is not an address (0x and 40 hex digits) to pay the bounty to")
    if amount <= 0:
        raise CaseRefused(f"a bounty must be a positive amount, not {amount} wei")
    payee = to_checksum_address(to)
    whole = amount / 10**18
    return DaoVoteInput(
        proposal=Proposal(
            id=proposal_id or f"bounty-{case.case_id.removeprefix('case:')[:12]}",
            title=f"Bounty for charter case {case.case_id}: {whole:g} {TOKEN_SYMBOL}",
            body=(f"Pay {whole:g} {TOKEN_SYMBOL} from the DAO treasury (the timelock) to {payee}, the address its "
                  f"reporter gave, for charter violation case {case.case_id}, decided 'upheld' "
                  f"(audit entry {case.audit_seq}): {case.summary}"),
            choices=list(GOVERNOR_CHOICES),
            calls=[OnChainCall(target=TOKEN, signature="transfer(address,uint256)", args=[payee, amount])]),
        backend=VoteBackend.GOVERNOR,
    )
