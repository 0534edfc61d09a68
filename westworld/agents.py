"""Models of agent actions, the anomaly watch and the network halt (workflow and activity payloads)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from westworld.anomaly import AgentEvent, AnomalyConfig, Finding
from westworld.authority import AdminSigners, SignedBy
from westworld.capability import CheckResult
from westworld.keys import agent_action_id
from westworld.peers import ActionDigestInput, action_digest
from westworld.policy import NetworkPolicy
from westworld.sandbox import MeshAction, MeshActionInput, MeshActionResult, MeshTarget
from westworld.sealed import Binding

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class AgentActionInput(BaseModel):
    """An agent asks to run ``action`` on ``node_ids`` with its capability token, sealed to the workers.

    Workflow id: ``agent-action:<agent_id>:<action_id>``. ``target`` says where to execute (local mesh nodes
    or a Kubernetes workload); without one the workflow decides and records only. ``token`` is the token sealed
    for this workflow id and this input (``westworld agent seal``, :mod:`westworld.sealed`): a token in clear is
    refused. When the action is wide, and how many peers must sign it, is the network policy's
    (``NetworkPolicy.peers``); the ``peer_*`` fields may only ask for stricter (a looser ask is refused).
    """

    agent_id: str = Field(pattern=KEY_PATTERN)
    action_id: str = Field(pattern=KEY_PATTERN, description="Business key of the action, unique per agent.")
    token: str = Field(min_length=1, max_length=131072, description="The capability token sealed to the workers "
                       "for this workflow and input (wws1:...); never a token in clear.")
    discharges: list[str] = Field(default_factory=list, description="Peer discharges bound to the token and to "
                                  "this action's digest.")
    action: MeshAction
    node_ids: list[str] = Field(min_length=1, max_length=100_000)
    target: MeshTarget | None = None
    version: str | None = None
    config: dict[str, str] = Field(default_factory=dict)
    peer_threshold_nodes: int | None = Field(None, ge=0, description="Stricter only: wide from fewer nodes than "
                                             "the policy's peers.threshold_nodes.")
    peer_threshold_pct: float | None = Field(None, ge=0, le=100, description="Stricter only: wide from a smaller "
                                             "share than the policy's peers.threshold_pct.")
    peers_required: int | None = Field(None, ge=1, le=64, description="Stricter only: more peers than the "
                                       "policy's peers.peers_required.")
    peer_wait: timedelta = Field(timedelta(hours=1), description="How long to wait for k signatures (at most the "
                                 "policy's peers.wait_max); then denied.")
    execute_timeout: timedelta = timedelta(minutes=10)

    @property
    def workflow_id(self) -> str:
        return agent_action_id(self.agent_id, self.action_id)

    def action_digest(self, workflow_id: str | None = None) -> bytes:
        """What peers sign and what their discharges are bound to (westworld/peers.py)."""
        return action_digest(ActionDigestInput(
            workflow_id=workflow_id or self.workflow_id, action_id=self.action_id, agent_id=self.agent_id,
            action=self.action.value, node_ids=self.node_ids, version=self.version, config=self.config))

    @classmethod
    def for_mesh_action(cls, agent_id: str, token: str, action: MeshActionInput, *, discharges: list[str] | None = None,
                        **policy: Any) -> AgentActionInput:
        """The agent action that runs ``action`` (e.g. a canary step) under the agent's (sealed) token; ``policy``
        asks for stricter peer thresholds, ``peers_required``, ``peer_wait`` and sets ``execute_timeout``."""
        return cls(agent_id=agent_id, action_id=action.action_id, token=token, discharges=discharges or [],
                   action=action.action, node_ids=action.node_ids, target=action.target, version=action.version,
                   config=action.config, **policy)


class AgentActionStatus(BaseModel):
    step: str
    digest: str = Field("", description="Hex SHA-256 the peers sign (see westworld/peers.py).")
    wide: bool = False
    peers_required: int = 0
    peers_signed: list[str] = Field(default_factory=list)
    decision: CheckResult | None = None


class AgentActionResult(BaseModel):
    agent_id: str
    action_id: str
    allowed: bool
    caveat: str = ""
    reason: str = ""
    wide: bool = False
    peers: list[str] = Field(default_factory=list)
    executed: bool = False
    applied: list[str] = Field(default_factory=list)
    previous: dict[str, str] = Field(default_factory=dict, description="node id -> version before the action.")
    audit_seq: int = -1

    def to_mesh_result(self, action_id: str) -> MeshActionResult:
        """The executed action as the mesh-action result a caller of ``execute_mesh_action`` expects."""
        return MeshActionResult(action_id=action_id, applied=self.applied, previous=self.previous)


class CapabilityCheckInput(BaseModel):
    """What the check activity decides on. ``token`` is sealed (``sealed``) for the calling workflow and the
    input whose digest is ``input_digest`` (a run started before sealing passes its token in clear)."""

    action_id: str
    agent_id: str
    token: str = Field(repr=False)
    discharges: list[str] = Field(default_factory=list)
    action: str
    node_ids: list[str]
    sealed: bool = False
    input_digest: str = ""
    action_digest: str = Field("", description="Hex digest the discharges must be bound to (westworld/peers.py).")
    discharge_ttl_max: timedelta = timedelta(hours=1)


class ResealInput(BaseModel):
    """A workflow hands its sealed token on to a child: the worker opens the parent's (bound to the calling
    workflow and ``input_digest``) and seals the token for the child's binding."""

    token: str = Field(repr=False)
    input_digest: str
    child: Binding | None = Field(None, description="reseal_token: the child's binding (claim_sealed_token: none).")


class SealedClaim(BaseModel):
    """A sealed token opened and claimed for the calling run: who it is for (never the token)."""

    agent_id: str
    token_id: str


class SealingKey(BaseModel):
    """The workers' public X25519 key tokens are sealed to (westworld/sealed.py)."""

    key_id: str
    public_key: str = Field(description="hex")


class DirectoryRequest(BaseModel):
    peers: list[str] = Field(default_factory=list, max_length=64, description="Peers whose public keys are wanted.")


class CapabilityDirectory(BaseModel):
    """Public material a client needs: the sealing key, and the public keys of the peers it asked for."""

    sealing_key: SealingKey
    peers: dict[str, str] = Field(default_factory=dict)


class CapabilityCheckOutcome(BaseModel):
    result: CheckResult
    live_nodes: int


class UsageSettle(BaseModel):
    action_id: str
    confirmed: bool
    endorsed_by: list[str] = Field(default_factory=list, description="Peers whose signatures the action carried.")


class SignerRegistry(BaseModel):
    """Registered signers (peer nodes or guardians): id -> hex Ed25519 public key. Public keys only."""

    signers: dict[str, str]


class AgentEventsInput(BaseModel):
    after_seq: int = 0
    limit: int = Field(1000, ge=1, le=10_000)


class AgentEventsPage(BaseModel):
    events: list[AgentEvent]
    last_seq: int
    live_nodes: int


class HaltState(BaseModel):
    halted: bool
    epoch: int = 0
    reason: str = ""
    since: datetime | None = None
    resumed_at: datetime | None = None
    resumed_by: list[str] = Field(default_factory=list)


class HaltRequest(BaseModel):
    request_key: str = Field(description="Idempotency key of the request (a retried allocation gets the same epoch).")
    reason: str


class HaltSet(BaseModel):
    epoch: int
    reason: str


class HaltEnd(BaseModel):
    epoch: int
    resumed_by: list[str]


class NetworkHaltInput(BaseModel):
    """Workflow id ``halt:<epoch>``; the epoch comes from ``allocate_halt_epoch`` (watch or CLI)."""

    epoch: int = Field(ge=1)
    reason: str
    findings: list[Finding] = Field(default_factory=list)
    guardians_required: int = Field(2, ge=1, le=64, description="k of the registered guardians to resume.")
    reminder_every: timedelta = Field(timedelta(minutes=15), description=(
        "How often the wait re-reads the guardian registry and re-publishes its step."))


class NetworkHaltStatus(BaseModel):
    epoch: int
    halted: bool
    reason: str
    digest: str = Field(description="Hex SHA-256 the guardians sign to resume.")
    guardians_required: int
    signed_by: list[str]


class NetworkHaltResult(BaseModel):
    epoch: int
    resumed_by: list[str]
    audit_seq: int


class WatchCarry(BaseModel):
    """What a run of the watch hands to the next (continue-as-new only: a start input carrying it is refused)."""

    after_seq: int = 0
    events: list[AgentEvent] = Field(default_factory=list)
    halts: list[int] = Field(default_factory=list)
    polls: int = 0
    admin_seq: int = Field(0, description="Signed changes accepted so far: the nonce the next one must sign.")
    policy: NetworkPolicy | None = Field(None, description="The policy the last run held, so the next one checks "
                                         "changes from its first moment (it reloads the policy at once).")
    signers: AdminSigners | None = None


class AnomalyWatchInput(BaseModel):
    """Workflow id ``anomaly-watch`` (one per network). Settings looser than the policy are tightened to it;
    settings stricter than the defaults (a hair trigger halts the network) need ``signed`` by one registered
    operator over ``change_digest("watch.start", <workflow id>, settings, "start", expires_at)``."""

    config: AnomalyConfig = Field(default_factory=AnomalyConfig)
    poll_interval: timedelta = timedelta(seconds=15)
    continue_after_polls: int = Field(500, ge=1)
    guardians_required: int = Field(2, ge=1, le=64)
    carry: WatchCarry | None = None
    signed: SignedBy | None = None

    def change(self) -> dict[str, Any]:
        """What an operator signs to start the watch stricter than the defaults."""
        return self.model_dump(mode="json", include={"config", "poll_interval", "guardians_required"})


class WatchSettings(BaseModel):
    """What an operator may change on a running watch (the ``reconfigure`` update)."""

    config: AnomalyConfig = Field(default_factory=AnomalyConfig)
    poll_interval: timedelta = timedelta(seconds=15)
    guardians_required: int = Field(2, ge=1, le=64)


class WatchConfigRequest(WatchSettings):
    """New settings for the running watch, signed (see westworld/authority.py): tightening by one registered
    operator, loosening (never beyond the policy) by k guardians; audited with the old ones and the reason."""

    reason: str = Field(min_length=1, max_length=500, description="Why (recorded in the audit log).")
    seq: int = Field(0, ge=0, description="The watch's admin_seq (its status shows it): a signature counts once.")
    signed: SignedBy | None = None

    def change(self) -> dict[str, Any]:
        """What the signers sign (with the watch id, ``seq`` and the expiry)."""
        return self.model_dump(mode="json", include={"config", "poll_interval", "guardians_required", "reason"})


class WatchStopRequest(BaseModel):
    """Stop the network's watch (k guardians sign; audited)."""

    reason: str = Field(min_length=1, max_length=500)
    seq: int = Field(0, ge=0)
    signed: SignedBy | None = None

    def change(self) -> dict[str, Any]:
        return {"reason": self.reason}


class AnomalyWatchStatus(BaseModel):
    after_seq: int
    events: int
    findings: list[Finding]
    halts: list[int]
    settings: WatchSettings | None = None
    admin_seq: int = 0
    protected: bool = Field(False, description="This run has the policy and checks who signs a change.")


class RegisterNodesInput(BaseModel):
    """Nodes a rollout provisioned itself (its stand-in mesh), registered so capability checks can count them."""

    node_ids: list[str] = Field(min_length=1, max_length=100_000)
    region: str = "local"


class AdminAction(StrEnum):
    """What the capability admin workflow changes (who may: westworld/authority.py)."""

    ADD_NODES = "add_nodes"
    REMOVE_NODES = "remove_nodes"  # plain (keyless) nodes only, e.g. a sandbox's when it is torn down; never a peer
    ADD_PEER = "add_peer"
    REMOVE_NODE = "remove_node"
    ADD_GUARDIAN = "add_guardian"
    REMOVE_GUARDIAN = "remove_guardian"
    ADD_OPERATOR = "add_operator"
    REMOVE_OPERATOR = "remove_operator"
    MINT = "mint"
    REVOKE_TOKEN = "revoke_token"  # noqa: S105 (an action name, not a secret)
    REVOKE_ALL = "revoke_all"
    ROTATE_KEY = "rotate_key"
    RETIRE_KEY = "retire_key"
    HALT = "halt"

    @property
    def registry(self) -> str:
        """The registry it changes (peer, guardian, operator) or "" (one operator decides)."""
        return {"add_peer": "peer", "remove_node": "peer", "add_guardian": "guardian", "remove_guardian": "guardian",
                "add_operator": "operator", "remove_operator": "operator"}.get(self.value, "")


class AdminChange(BaseModel):
    """One administrative change; only the fields its action uses are set."""

    model_config = ConfigDict(extra="forbid")

    action: AdminAction
    subject: str = Field("", pattern=r"^[A-Za-z0-9._:-]{0,128}$",
                         description="The node, guardian, operator, agent, token or root key id.")
    node_ids: list[str] = Field(default_factory=list, max_length=100_000)
    region: str = Field("", pattern=r"^[A-Za-z0-9._:-]{0,64}$")
    public_key: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    actions: list[str] = Field(default_factory=list, description="mint: the allowed actions.")
    recipient_key: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "mint: the X25519 public key the new token is sealed to (a token never enters history in clear)."))
    reason: str = Field("", max_length=500)
    guardians_required: int = Field(0, ge=0, le=64, description="halt: k to resume (never under the policy).")


class CapabilityAdminInput(BaseModel):
    """Workflow id ``capability-admin:<nonce>`` (the nonce is signed and used once)."""

    change: AdminChange
    signed: SignedBy


class AdminApply(BaseModel):
    nonce: str
    change: AdminChange


class AdminOutcome(BaseModel):
    detail: str
    sealed_token: str = Field("", repr=False, description="mint: the token sealed to the change's recipient_key.")
    halt_epoch: int = 0


class AdminResult(BaseModel):
    action: AdminAction
    detail: str
    sealed_token: str = Field("", repr=False, description=(
        "mint: the new token sealed (libsodium sealed box, hex) to the request's recipient_key."))
    halt_epoch: int = 0
    signed_by: list[str]
    audit_seq: int


class CapabilityRegistries(BaseModel):
    """What anyone may read (public keys only): nodes and regions, peers, guardians, operators, the halt."""

    nodes: dict[str, str]
    peers: dict[str, str]
    guardians: dict[str, str]
    operators: dict[str, str]
    halt: HaltState
    active_key: str = ""
    revocation_epoch: int = 0
