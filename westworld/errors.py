"""The project's one error tree.

Every failure a user or service can cause has a type constant here. Workflows and activities raise
``temporalio.exceptions.ApplicationError(message, type=<CONSTANT>, non_retryable=True)`` for permanent
failures (bad input, a forged signature, a vote after its deadline); transient outside failures (a chain
node or database that does not answer) are left to raise and retry under explicit retry policies.

The core raises :class:`WestworldError` subclasses carrying the same constants, so the layer that wraps
them into ``ApplicationError`` does not need to guess the type.

    WestworldError                      permanent: retrying cannot help
    +-- InvalidInput        INVALID_INPUT       malformed model, YAML, file
    +-- VoteRejected        VOTE_REJECTED       (with .reason: one of the VOTE_* constants)
    +-- AuditTampered       AUDIT_TAMPERED      the audit log fails verification
    +-- AuditUnavailable    AUDIT_UNAVAILABLE   the log cannot be written: the decision is refused
    +-- ChainRejected       CHAIN_REJECTED      a transaction reverted for a reason that will not change
    +-- InvalidShare        INVALID_SHARE       a key share fails its commitment, repeats, or is unknown
    +-- DecryptFailed       DECRYPT_FAILED      authenticated decryption failed (wrong key or tampered data)
    +-- ShareRejected       SHARE_REJECTED      a guardian's share submission refused (type: one of SHARE_*)
"""

from __future__ import annotations

INVALID_INPUT = "InvalidInput"
VOTE_REJECTED = "VoteRejected"
AUDIT_TAMPERED = "AuditTampered"
AUDIT_UNAVAILABLE = "AuditUnavailable"
CHAIN_REJECTED = "ChainRejected"
CONFIG_ERROR = "ConfigError"
INVALID_SHARE = "InvalidShare"  # a key share that is forged, wrong, duplicated or unknown
DECRYPT_FAILED = "DecryptFailed"  # an AEAD check failed: wrong key, tampered ciphertext or associated data
SANDBOX_FAILED = "SandboxFailed"
BACKEND_UNAVAILABLE = "BackendUnavailable"
METRICS_UNAVAILABLE = "MetricsUnavailable"
CHAOS_UNAVAILABLE = "ChaosUnavailable"  # a fault needs Chaos Mesh and the cluster does not have its CRDs

# Reasons a vote is refused; they are also the ApplicationError types of refused votes.
VOTE_BAD_SIGNATURE = "BadSignature"
VOTE_UNKNOWN_PROPOSAL = "UnknownProposal"
VOTE_AFTER_DEADLINE = "VoteAfterDeadline"
VOTE_ALREADY_CAST = "AlreadyVoted"
VOTE_NO_POWER = "NoVotingPower"
VOTE_BAD_CHOICE = "InvalidChoice"
VOTE_CLOSED = "VotingClosed"
VOTE_UNAVAILABLE = "VoteNotRecorded"

# Reasons a guardian's share submission (or acknowledgement) is refused; the ApplicationError types of refusals.
SHARE_REJECTED = "ShareRejected"
SHARE_NOT_GUARDIAN = "NotAGuardian"
SHARE_BAD_COMMITMENT = "WrongCommitment"
SHARE_BAD_SIGNATURE = "BadShareSignature"
SHARE_DUPLICATE = "DuplicateShare"
SHARE_WINDOW_CLOSED = "ShareWindowClosed"
SHARE_BAD_PROOF = "BadAcknowledgement"
ACCESS_NOT_APPROVED = "AccessNotApproved"

# Capabilities: an agent action refused by its token (or by missing peer signatures), or failed while executing;
# and the reasons a peer's or guardian's signature is refused (the ApplicationError types of refused updates).
CAPABILITY_DENIED = "CapabilityDenied"
AGENT_ACTION_FAILED = "AgentActionFailed"
SIGNER_UNKNOWN = "UnknownSigner"
SIGNER_BAD_SIGNATURE = "BadSignerSignature"
SIGNER_DUPLICATE = "DuplicateSigner"
SIGNATURES_CLOSED = "NotAwaitingSignatures"

# Trust model (docs/security.md): the policy in force, and requests that try to decide what is not theirs.
POLICY_INVALID = "PolicyInvalid"  # the policy file does not parse or goes under the hard floors
POLICY_MISMATCH = "PolicyNotOnChain"  # the policy file's hash is not the one the DAO put on chain
INJECTED_STATE = "InjectedState"  # a start input carries internal state only the workflow itself may carry
UNAUTHORISED = "Unauthorised"  # a change to a protection without the signatures entitled to make it
TOKEN_NOT_SEALED = "TokenNotSealed"  # noqa: S105 (an error type) a capability token given in clear
LOOSER_THAN_POLICY = "LooserThanPolicy"  # a request asks for less than the policy's floor (quorum, window, ...)
PROPOSAL_ALREADY_OPENED = "ProposalAlreadyOpened"  # a new start for a proposal another vote execution opened
PAYLOAD_UNDECRYPTABLE = "PayloadUndecryptable"  # a payload with an unknown key id, tampered or relabelled


class WestworldError(Exception):
    """A permanent failure; ``type`` is the constant an ``ApplicationError`` carries."""

    type: str = INVALID_INPUT

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        if type is not None:
            self.type = type

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(WestworldError):
    type = INVALID_INPUT


class VoteRejected(WestworldError):
    """A vote that cannot be accepted; ``type`` is one of the ``VOTE_*`` reasons."""

    type = VOTE_REJECTED


class AuditTampered(WestworldError):
    type = AUDIT_TAMPERED


class AuditUnavailable(WestworldError):
    type = AUDIT_UNAVAILABLE


class ChainRejected(WestworldError):
    type = CHAIN_REJECTED


class InvalidShare(WestworldError):
    """Key shares that cannot be combined; ``indexes`` names every offending share (by its Shamir index)."""

    type = INVALID_SHARE

    def __init__(self, message: str, *, indexes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.indexes = indexes


class DecryptFailed(WestworldError):
    type = DECRYPT_FAILED


class ShareRejected(WestworldError):
    """A guardian's share submission that cannot be accepted; ``type`` is one of the ``SHARE_*`` reasons."""

    type = SHARE_REJECTED
