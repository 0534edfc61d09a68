"""Business keys: every workflow id, schedule id, idempotency key and search-attribute name, in one place.

A workflow id is a business key (``vote:<proposal>``, ``experiment:<name>``, ``rotation:<epoch>``): Temporal refuses
a second start under the same key, so the id *is* the duplicate check, and the CLI, the demos and other workflows
find a run by rebuilding it. Build and parse them only here. The strings are part of saved histories and of the
capability bindings sealed to a workflow id: changing one breaks replay and unseals tokens, so they stay
byte-identical (``tests/unit/test_keys.py`` pins them).

Pure: randomness (nonces of one-off reads) is passed in by the caller.
"""

from __future__ import annotations

# --- search-attribute names (the typed keys live in workflows/steps.py; registered by `westworld up`) -----------
STEP_ATTR = "WestworldStep"  # Keyword: what the workflow is doing now
STEP_SINCE_ATTR = "WestworldStepSince"  # Datetime: since when (workflow time)
PROPOSAL_ID_ATTR = "ProposalId"
VOTE_STATE_ATTR = "VoteState"
DOCUMENT_ID_ATTR = "DocumentId"
EXPERIMENT_NAME_ATTR = "ExperimentName"
AGENT_ID_ATTR = "AgentId"

# name -> Temporal type name, registered by `westworld up` and the test fixtures.
SEARCH_ATTRIBUTES: dict[str, str] = {
    STEP_ATTR: "Keyword",
    STEP_SINCE_ATTR: "Datetime",
    PROPOSAL_ID_ATTR: "Keyword",
    VOTE_STATE_ATTR: "Keyword",
    EXPERIMENT_NAME_ATTR: "Keyword",
    AGENT_ID_ATTR: "Keyword",
    DOCUMENT_ID_ATTR: "Keyword",
}

# --- governance -----------------------------------------------------------------------------------------------
VOTE_PREFIX = "vote:"


def vote_id(proposal_id: str) -> str:
    """DaoVoteWorkflow: ``vote:<proposal id>``."""
    return f"{VOTE_PREFIX}{proposal_id}"


def proposal_of(vote_workflow_id: str) -> str:
    """The proposal id of a vote workflow id (the inverse of :func:`vote_id`)."""
    return vote_workflow_id.removeprefix(VOTE_PREFIX)


def audit_verify_id(nonce: str) -> str:
    """AuditVerifyWorkflow run on demand: ``audit-verify-<nonce>`` (a one-off read)."""
    return f"audit-verify-{nonce}"


# --- experiments and rollouts ---------------------------------------------------------------------------------
EXPERIMENT_PREFIX = "experiment:"
CANARY_PREFIX = "canary:"


def experiment_id(name: str) -> str:
    """ExperimentWorkflow: ``experiment:<name>``."""
    return f"{EXPERIMENT_PREFIX}{name}"


def experiment_proposal_id(name: str, evidence_hash: str) -> str:
    """The DAO proposal an experiment's verdict goes to: ``<name>-<first 8 of the evidence hash>``."""
    return f"{name}-{evidence_hash[:8]}"


def canary_id(name: str) -> str:
    """CanaryRolloutWorkflow: ``canary:<name>`` (an experiment's rollout child has the experiment's name)."""
    return f"{CANARY_PREFIX}{name}"


def canary_step_action(name: str, index: int) -> str:
    """The action id of a rollout step: ``canary:<name>:step-<index>``."""
    return f"{CANARY_PREFIX}{name}:step-{index}"


def canary_rollback_action(name: str, version: str) -> str:
    """The action id of a rollback: ``canary:<name>:rollback-<version>``."""
    return f"{CANARY_PREFIX}{name}:rollback-{version}"


def sandbox_id(name: str, arm: str) -> str:
    """An experiment arm's sandbox: ``<experiment>-<arm>``."""
    return f"{name}-{arm}"


def canary_mesh_id(name: str) -> str:
    """The local mesh a rollout makes when it has no target: ``<rollout>-mesh``."""
    return f"{name}-mesh"


def collection_id(workflow_id: str, index: int) -> str:
    """Idempotency key of the ``index``-th metrics collection of a workflow: ``<workflow id>:<index>``."""
    return f"{workflow_id}:{index}"


# --- capabilities ---------------------------------------------------------------------------------------------
AGENT_ACTION_PREFIX = "agent-action:"
WATCH_ID = "anomaly-watch"  # the network's watch: the only watch whose findings halt the network
ADMIN_ID_PREFIX = "capability-admin:"  # CapabilityAdminWorkflow ids: capability-admin:<nonce>
HALT_PREFIX = "halt:"


def agent_action_id(agent_id: str, action_id: str) -> str:
    """AgentActionWorkflow: ``agent-action:<agent>:<action id>``."""
    return f"{AGENT_ACTION_PREFIX}{agent_id}:{action_id}"


def canary_step_workflow_id(agent_id: str, name: str, index: int) -> str:
    """The AgentActionWorkflow a rollout step runs as: ``agent-action:<agent>:canary:<name>:step-<index>``."""
    return agent_action_id(agent_id, canary_step_action(name, index))


def execute_action_id(workflow_id: str) -> str:
    """Idempotency key of the mesh change an allowed agent action executes: ``<workflow id>:execute``."""
    return f"{workflow_id}:execute"


def admin_id(nonce: str) -> str:
    """CapabilityAdminWorkflow: ``capability-admin:<nonce>`` (the nonce is part of what the operators sign)."""
    return f"{ADMIN_ID_PREFIX}{nonce}"


def admin_nonce(workflow_id: str) -> str:
    """The nonce of an admin workflow id (the inverse of :func:`admin_id`)."""
    return workflow_id.removeprefix(ADMIN_ID_PREFIX)


def halt_id(epoch: int) -> str:
    """NetworkHaltWorkflow: ``halt:<epoch>``."""
    return f"{HALT_PREFIX}{epoch}"


def capability_read_id(nonce: str) -> str:
    """CapabilityReadWorkflow (a one-off read): ``capability-read:<nonce>``."""
    return f"capability-read:{nonce}"


def capability_directory_id(nonce: str) -> str:
    """CapabilityDirectoryWorkflow (a one-off read): ``capability-directory:<nonce>``."""
    return f"capability-directory:{nonce}"


# --- shelter --------------------------------------------------------------------------------------------------
ACCESS_PREFIX = "access:"
EMERGENCY_PREFIX = "emergency:"
ROTATION_PREFIX = "rotation:"


def access_id(request_id: str, *, emergency: bool = False) -> str:
    """DocumentAccessWorkflow ``access:<request>``, or EmergencyAccessWorkflow ``emergency:<request>``."""
    return f"{EMERGENCY_PREFIX if emergency else ACCESS_PREFIX}{request_id}"


def access_candidates(ref: str) -> list[str]:
    """The workflow ids a reference may name: itself if it is a workflow id, else both access kinds."""
    return [ref] if ":" in ref else [access_id(ref), access_id(ref, emergency=True)]


def access_proposal_id(request_id: str, *, emergency: bool = False) -> str:
    """The DAO proposal of an access request: ``access-<request>`` or ``emergency-<request>``."""
    return f"{'emergency' if emergency else 'access'}-{request_id}"


def rotation_id(epoch: int) -> str:
    """GuardianRotationWorkflow started by hand: ``rotation:<current epoch>``."""
    return f"{ROTATION_PREFIX}{epoch}"


def rotation_run_key(workflow_id: str, run_id: str) -> str:
    """What a rotation's shares and acknowledgements are bound to: ``<workflow id>/<run id>`` (this run only)."""
    return f"{workflow_id}/{run_id}"


def rotation_proposal_id(from_epoch: int, run_id: str) -> str:
    """The DAO proposal on a new guardian set: ``rotation-<from epoch>-<run id>`` (a retried rotation is a new
    run, so a new proposal)."""
    return f"rotation-{from_epoch}-{run_id}"


def key_ceremony_id(epoch_key: str) -> str:
    """KeyCeremonyWorkflow: ``key-ceremony:<epoch key>``."""
    return f"key-ceremony:{epoch_key}"


def key_epoch_read_id(nonce: str) -> str:
    """CurrentKeyEpochWorkflow (a one-off read): ``key-epoch-read:<nonce>``."""
    return f"key-epoch-read:{nonce}"


def document_id(name: str) -> str:
    """StoreDocumentWorkflow: ``document:<document id>``."""
    return f"document:{name}"


# --- schedules (their workflows run under the schedule id) ----------------------------------------------------
AUDIT_ANCHOR_SCHEDULE = "audit-anchor"
GUARDIAN_ROTATION_SCHEDULE = "guardian-rotation"
REPLICA_AUDIT_SCHEDULE = "replica-audit"
RETENTION_PURGE_SCHEDULE = "retention-purge"


# --- charter -----------------------------------------------------------------------------------------------------
CHARTER_SYNC_ID = "charter-sync"  # CharterSyncWorkflow, the standing one `westworld up` starts


# --- charter: users' rights ------------------------------------------------------------------------------------
REPORT_INTAKE_ID = "charter-reports"  # ViolationIntakeWorkflow: the one intake every anonymous report goes through
CASE_PREFIX = "case:"


def consent_id(subject: str) -> str:
    """CharterConsentWorkflow: ``consent:<subject address, lower case>`` (one per data subject)."""
    return f"consent:{subject.lower()}"


def export_id(subject: str, nonce: int) -> str:
    """DataExportWorkflow: ``export:<subject address, lower case>:<nonce of the signed request>``."""
    return f"export:{subject.lower()}:{nonce}"


def case_id(receipt_hash: str) -> str:
    """ViolationReportWorkflow: ``case:<first 32 hex of the receipt hash>`` (the receipt code itself never)."""
    return f"{CASE_PREFIX}{receipt_hash[:32]}"


def case_proposal_id(case_workflow_id: str) -> str:
    """The DAO proposal a case escalates to when its committee misses the deadline: ``case-<32 hex>``."""
    return f"case-{case_workflow_id.removeprefix(CASE_PREFIX)}"
