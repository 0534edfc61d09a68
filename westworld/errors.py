"""The project's one error tree, and every Temporal error type as a constant.

Split the way kopf splits its handler errors: a :class:`PermanentError` is a failure retrying cannot help (bad
input, a refused signature, a policy violation, something that does not exist); a :class:`TransientError` is an
outside system that does not answer yet (a daemon down, a chain not at the needed time) and is retried under the
caller's retry policy. Activities just raise them: the worker's interceptor (``workers/interceptors.py``) turns a
permanent one into a non-retryable ``ApplicationError`` and a transient one into a retryable one, both with the
error's ``type`` and message. Workflows raise ``ApplicationError(message, type=<CONSTANT>, non_retryable=True)``
themselves. ``WestworldError`` itself is the root and is not raised.

    WestworldError                         .type (a constant below), .message
    +-- PermanentError                     never retried; type InvalidInput unless the class or raiser says
    |   +-- InvalidInput        INVALID_INPUT       malformed model, YAML, file, argument
    |   |   +-- SettingsError   CONFIG_ERROR        a setting or config file that cannot be used
    |   |   +-- CharterInvalid  CHARTER_INVALID     a charter file that does not parse or breaks a rule
    |   |   +-- DocumentRefused                     a YAML/JSON reading limit hit, with its place (.mark)
    |   |   +-- ProofError                          a Merkle proof request or proof that is malformed (a ValueError)
    |   |   +-- DuplicateKeyError                   a JSON object naming a key twice (a ValueError)
    |   |   +-- TooFewGuardians TOO_FEW_GUARDIANS   a guardian set smaller than the k the key is split with
    |   +-- VoteRejected        VOTE_REJECTED       (type: one of the VOTE_* reasons)
    |   +-- AuditTampered       AUDIT_TAMPERED      the audit log fails verification
    |   +-- ChainRejected       CHAIN_REJECTED      a transaction reverted for a reason that will not change
    |   +-- InvalidShare        INVALID_SHARE       a key share fails its commitment, repeats, or is unknown
    |   +-- DecryptFailed       DECRYPT_FAILED      authenticated decryption failed (wrong key or tampered data)
    |   +-- ShareRejected       SHARE_REJECTED      a guardian's share submission refused (type: one of SHARE_*)
    |   +-- Unauthorised        UNAUTHORISED        a change without the signatures entitled to make it
    |   +-- SignatureRejected   (type: one of SIGNER_*) a peer's or guardian's signature refused
    |   +-- SealRefused         TOKEN_NOT_SEALED    a sealed token that does not open or does not fit
    |   +-- Denial              CAPABILITY_DENIED   a capability token refused (.caveat names the caveat)
    |   +-- StepDenied          CAPABILITY_DENIED   a canary step's agent action refused
    |   +-- ConsentRejected     CONSENT_REJECTED    a consent grant or withdrawal refused
    |   +-- KernelEnforcementUnavailable            the kernel cannot run the charter's filter (.reason)
    |   +-- ExportRefused       EXPORT_REFUSED      a data export request refused
    |   +-- ReportRefused       REPORT_REFUSED      a violation report refused at intake
    |   +-- CaseRefused         CASE_REFUSED        a case action refused (type: CASE_REFUSED or one of SIGNER_*)
    |   +-- StorageRejected     INVALID_INPUT       a storage network refused a request
    |   |   +-- IpfsError, ArweaveError, SiaError
    |   +-- OtterscanUnavailable                    the chain node has no Otterscan API (a fallback is used)
    |   +-- CodecError                              the payload key ring or a payload cannot be used (a ValueError)
    |   |   +-- KeyRingError, PayloadDecryptionError, CodecServerError
    |   +-- NotConfigured       CONFIG_ERROR        the stack is not set up here; the message says what to run
    |   |   +-- StackDown                           a component of the stack does not answer
    |   +-- Refused             REFUSED             a command's request cannot be served (type: the cause's)
    +-- TransientError                     retried; ``delay`` (optional) is the next retry's delay
        +-- AuditUnavailable    AUDIT_UNAVAILABLE   the log cannot be written now (the decision waits for it)
        +-- ChainNotReady, KubeUnreachable, SandboxTerminating, NetError,
        +-- IpfsUnavailable, ArweaveUnavailable, SiaUnavailable, StartError, DemoTimeout, IntakeDown
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

INVALID_INPUT = "InvalidInput"
VOTE_REJECTED = "VoteRejected"
AUDIT_TAMPERED = "AuditTampered"
AUDIT_UNAVAILABLE = "AuditUnavailable"
CHAIN_REJECTED = "ChainRejected"
CONFIG_ERROR = "ConfigError"
TOO_FEW_GUARDIANS = "TooFewGuardians"  # a new guardian set smaller than k: the key cannot be split k-of-n
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
CHARTER_MISMATCH = "CharterNotOnChain"  # the charter file's hash is not the one the Charter contract holds
INJECTED_STATE = "InjectedState"  # a start input carries internal state only the workflow itself may carry
UNAUTHORISED = "Unauthorised"  # a change to a protection without the signatures entitled to make it
TOKEN_NOT_SEALED = "TokenNotSealed"  # noqa: S105 (an error type) a capability token given in clear
LOOSER_THAN_POLICY = "LooserThanPolicy"  # a request asks for less than the policy's floor (quorum, window, ...)
PROPOSAL_ALREADY_OPENED = "ProposalAlreadyOpened"  # a new start for a proposal another vote execution opened
PAYLOAD_UNDECRYPTABLE = "PayloadUndecryptable"  # a payload with an unknown key id, tampered or relabelled

# Charter (user data rights).
CHARTER_INVALID = "CharterInvalid"  # a charter file that does not parse or breaks a rule
CONSENT_REJECTED = "ConsentRejected"  # a consent grant or withdrawal that cannot be accepted
KERNEL_UNAVAILABLE = "KernelEnforcementUnavailable"  # the kernel cannot run the charter's eBPF filter here
CONSENT_REPLAYED = "ConsentReplayed"  # a consent message whose nonce its subject already used
EXPORT_REFUSED = "ExportRefused"  # a data export request that is not signed by its subject, expired or malformed
REPORT_REFUSED = "ReportRefused"  # a violation report refused at intake (proof of work, rate limit, size, duplicate)
CASE_REFUSED = "CaseRefused"  # a committee or reporter action on a case refused (who signed, what state)

# Outside systems: a Snapshot hub, the replicas of a sheltered document.
SNAPSHOT_UNAVAILABLE = "SnapshotUnavailable"  # this worker has no Snapshot hub configured
SNAPSHOT_REJECTED = "SnapshotRejected"  # the hub refused a message or query (its reason in the message)
SNAPSHOT_UNKNOWN_PROPOSAL = "SnapshotUnknownProposal"
REPLICA_NOT_VERIFIED = "ReplicaNotVerified"  # a replica read back whose bytes do not hash to its digest (retried)
NO_GOOD_COPY = "NoGoodCopy"  # no verified copy of a document is left anywhere to replicate or repair from
REPLICATION_FAILED = "ReplicationFailed"  # fewer verified replicas than the document asked for
REFUSED = "Refused"  # a command's request that cannot be served (the CLI prints the message)
OTTERSCAN_UNAVAILABLE = "OtterscanUnavailable"

# Transient: retried under the caller's policy (the types are the class names they always had).
CHAIN_NOT_READY = "ChainNotReady"
KUBE_UNREACHABLE = "KubeUnreachable"
SANDBOX_TERMINATING = "SandboxTerminating"
NET_COMMAND_FAILED = "NetError"
IPFS_UNAVAILABLE = "IpfsUnavailable"
ARWEAVE_UNAVAILABLE = "ArweaveUnavailable"
SIA_UNAVAILABLE = "SiaUnavailable"
SERVICE_NOT_STARTED = "StartError"
DEMO_TIMEOUT = "DemoTimeout"
INTAKE_UNAVAILABLE = "IntakeUnavailable"  # the vote intake did not take a ballot nor refuse it


class WestworldError(Exception):
    """The root: ``type`` is the constant an ``ApplicationError`` carries; raise a subclass, never this."""

    type: str = INVALID_INPUT

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        if type is not None:
            self.type = type

    @property
    def message(self) -> str:
        return str(self.args[0])


class PermanentError(WestworldError):
    """Retrying cannot help: bad input, a refused signature, a policy violation, something that does not exist."""


class TransientError(WestworldError):
    """An outside system that does not answer (yet); retried, after ``delay`` if given."""

    def __init__(self, message: str, *, type: str | None = None, delay: timedelta | None = None) -> None:
        super().__init__(message, type=type)
        self.delay = delay


# -- permanent ----------------------------------------------------------------------------------------------


class InvalidInput(PermanentError):
    type = INVALID_INPUT


class SettingsError(InvalidInput):
    """Settings that cannot be used: a value of the wrong type, or a config file that is missing or unreadable."""

    type = CONFIG_ERROR


class CharterInvalid(InvalidInput):
    """A charter file that does not parse or breaks a rule; the message lists every problem with its path."""

    type = CHARTER_INVALID


class DocumentRefused(InvalidInput):
    """A reading limit (size, depth, aliases, a duplicate key) hit inside the YAML reader; ``mark`` is the place."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


class ProofError(InvalidInput, ValueError):
    """A proof request or proof is malformed (index out of range, wrong hash size, wrong length)."""


class DuplicateKeyError(InvalidInput, ValueError):
    """A JSON object names the same key twice."""


class TooFewGuardians(InvalidInput):
    """A guardian set with fewer guardians than the k the key would be split with (refused before anything runs)."""

    type = TOO_FEW_GUARDIANS


class VoteRejected(PermanentError):
    """A vote that cannot be accepted; ``type`` is one of the ``VOTE_*`` reasons."""

    type = VOTE_REJECTED


class AuditTampered(PermanentError):
    type = AUDIT_TAMPERED


class ChainRejected(PermanentError):
    type = CHAIN_REJECTED


class InvalidShare(PermanentError):
    """Key shares that cannot be combined; ``indexes`` names every offending share (by its Shamir index)."""

    type = INVALID_SHARE

    def __init__(self, message: str, *, indexes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.indexes = indexes


class DecryptFailed(PermanentError):
    type = DECRYPT_FAILED


class ShareRejected(PermanentError):
    """A guardian's share submission that cannot be accepted; ``type`` is one of the ``SHARE_*`` reasons."""

    type = SHARE_REJECTED


class Unauthorised(PermanentError):
    """A change to a protection without the signatures entitled to make it; the message names what is missing."""

    type = UNAUTHORISED


class SignatureRejected(PermanentError):
    """A peer's or guardian's signature refused; ``reason`` (= ``type``) is one of the ``SIGNER_*`` constants."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, type=reason)

    @property
    def reason(self) -> str:
        return self.type


class SealRefused(PermanentError):
    """The sealed token does not open or does not fit; ``reason`` says why (never the token)."""

    type = TOKEN_NOT_SEALED

    @property
    def reason(self) -> str:
        return self.message


class Denial(PermanentError):
    """A capability token refused: ``caveat`` names the caveat (or check) and ``reason`` why."""

    type = CAPABILITY_DENIED

    def __init__(self, caveat: str, reason: str) -> None:
        super().__init__(f"{caveat}: {reason}")
        self.caveat, self.reason = caveat, reason


class StepDenied(PermanentError):
    """A canary step's agent action was refused by the capability check (caveat named in the message)."""

    type = CAPABILITY_DENIED


class ConsentRejected(PermanentError):
    """A consent grant or withdrawal that cannot be accepted (bad signature, expired, unknown metric)."""

    type = CONSENT_REJECTED


class KernelEnforcementUnavailable(PermanentError):
    """The kernel cannot run the charter's eBPF filter here; ``reason`` says why (callers fall back to the gate)."""

    type = KERNEL_UNAVAILABLE

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ExportRefused(PermanentError):
    """A data export request that cannot be served (not signed by its subject, expired, a bad key)."""

    type = EXPORT_REFUSED


class ReportRefused(PermanentError):
    """A violation report refused at intake: proof of work, rate limit, size or a receipt already used."""

    type = REPORT_REFUSED


class CaseRefused(PermanentError):
    """A case action refused: not a committee member, a bad signature, a repeat, or the case not in that state."""

    type = CASE_REFUSED


class StorageRejected(PermanentError):
    """A storage network answered with a refusal (a malformed CID, a refused transaction, no contracts...)."""


class IpfsError(StorageRejected):
    """The IPFS daemon answered with an error (e.g. a malformed CID)."""


class ArweaveError(StorageRejected):
    """The Arweave gateway refused a transaction."""


class SiaError(StorageRejected):
    """renterd refused the request (bad password, no contracts, ...)."""


class OtterscanUnavailable(PermanentError):
    """The chain node does not serve the Otterscan API (the caller falls back to scanning blocks)."""

    type = OTTERSCAN_UNAVAILABLE


class CodecError(PermanentError, ValueError):
    """The payload codec's errors: the key ring file or a payload cannot be used."""


class KeyRingError(CodecError):
    """The key ring file is missing, malformed or would be overwritten."""

    type = CONFIG_ERROR


class PayloadDecryptionError(CodecError):
    """A payload cannot be decrypted: its key id is unknown here, or it fails authentication."""

    type = PAYLOAD_UNDECRYPTABLE


class CodecServerError(CodecError):
    """The codec server cannot start as configured (no token, a readable token file, ...)."""

    type = CONFIG_ERROR


class NotConfigured(PermanentError):
    """The stack has not been set up here (no keys, no contracts): the message says what to run."""

    type = CONFIG_ERROR


class StackDown(NotConfigured):
    """A component of the stack (Temporal, the chain) does not answer: the message names it and says what to run."""


class Refused(PermanentError):
    """A command's request that cannot be served; the message says why and what to do (``type``: the cause's)."""

    type = REFUSED


# -- transient ----------------------------------------------------------------------------------------------


class AuditUnavailable(TransientError):
    """The audit log cannot be written now; the decision waits (bounded by the audit retry policy), then fails."""

    type = AUDIT_UNAVAILABLE


class ChainNotReady(TransientError):
    """The chain has not reached the needed time yet (real chains only); retrying later helps."""

    type = CHAIN_NOT_READY


class KubeUnreachable(TransientError):
    """The apiserver did not answer (or failed on its side)."""

    type = KUBE_UNREACHABLE


class SandboxTerminating(TransientError):
    """The sandbox's namespace is still being deleted."""

    type = SANDBOX_TERMINATING


class NetError(TransientError):
    """An ``ip``/``tc``/``nft`` command failed; the message holds the command and its stderr."""

    type = NET_COMMAND_FAILED


class IpfsUnavailable(TransientError):
    """The IPFS daemon did not answer."""

    type = IPFS_UNAVAILABLE


class ArweaveUnavailable(TransientError):
    """The Arweave gateway did not answer."""

    type = ARWEAVE_UNAVAILABLE


class SiaUnavailable(TransientError):
    """renterd did not answer."""

    type = SIA_UNAVAILABLE


class StartError(TransientError):
    """A local service did not start; the message names it, its address and its log file."""

    type = SERVICE_NOT_STARTED


class IntakeDown(TransientError):
    """The vote intake did not take the ballot and did not refuse it: down, or this vote is not served there."""

    type = INTAKE_UNAVAILABLE


class DemoTimeout(TransientError):
    """A demo part did not finish within its time limit."""

    type = DEMO_TIMEOUT
