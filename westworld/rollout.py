"""Models of ``CanaryRolloutWorkflow``: its input (one JSON object), signals' payloads, live status and result."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.canary import Measurement, PlannedStep
from westworld.durations import Duration
from westworld.experiment import DEFAULT_STEPS, NAME_PATTERN, MetricSpec, RolloutStep
from westworld.sandbox import MeshTarget, NodeRef


class RolloutPhase(StrEnum):
    PROVISIONING = "provisioning"
    STEPPING = "stepping"
    BAKING = "baking"
    PAUSED = "paused"
    ROLLING_BACK = "rolling back"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"
    ABORTED = "aborted"


class CanaryInput(BaseModel):
    """Input of ``CanaryRolloutWorkflow`` (id ``canary:<name>``). Durations read as in an experiment spec (``30s``,
    ``10m``, ``1h30m``, ISO 8601 or seconds); a zero only where it means something (``bake_time: 0s``: one analysis
    right away, no bake)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(min_length=1, description="The version rolled out.")
    config: dict[str, str] = Field(default_factory=dict)
    target: MeshTarget | None = Field(None, description="Existing nodes (local) or a Deployment/DaemonSet.")
    mesh_nodes: int | None = Field(None, ge=1, le=500, description="Local only: provision a mesh of this many "
                                                                   "nodes as the target (torn down at the end).")
    mesh_version: str = Field("1.3.0", description="Version a provisioned mesh starts at.")
    keep_mesh: bool = Field(False, description="Leave a provisioned mesh running after the rollout.")
    steps: list[RolloutStep] = Field(default_factory=lambda: list[int | str](DEFAULT_STEPS), min_length=1)
    bake_time: Duration = Field(timedelta(minutes=10), description="Analysis time at each step before the next "
                                "(0s: one analysis right away).")
    analysis_interval: Duration = Field(timedelta(minutes=1), gt=timedelta(0))
    metrics: list[MetricSpec] = Field(default_factory=list, description="Measured on canary vs stable nodes.")
    selector_labels: dict[str, str] = Field(default_factory=dict, description="Label matchers of the target's "
                                            "series (a provisioned mesh fills them in).")
    node_label: str = Field("node", description="The Prometheus label naming a node.")
    replicas: int | None = Field(None, ge=1, le=10_000, description="Kubernetes target without listed nodes: its "
                                 "replica count (steps are counted in replicas).")
    canary_labels: dict[str, str] | None = Field(None, description="Matchers of the canary's series where nodes are "
                                                 "not labelled one by one (e.g. a Kubernetes track label).")
    stable_labels: dict[str, str] | None = Field(None, description="Matchers of the stable series (with "
                                                 "canary_labels).")
    evidence_hash: str | None = Field(None, description="The experiment evidence that approved this rollout.")
    agent_id: str | None = Field(None, description="The agent each step acts as (capability-bounded).")
    capability_token: str | None = Field(None, description="The agent's capability token sealed for this rollout "
                                         "(canary:<name>) and this input (wws1:...; `westworld agent seal "
                                         "--workflow CanaryRolloutWorkflow`); never a token in clear.")
    peers_required: int | None = Field(None, ge=1, le=64, description="With a token, stricter only: more peer "
                                       "signatures for a wide step than the policy's peers.peers_required.")
    peer_wait: Duration = Field(timedelta(hours=1), gt=timedelta(0), description="With a token: how long a wide "
                                "step waits for its peer signatures before it is denied (at most the policy's "
                                "peers.wait_max).")
    peer_threshold_nodes: int | None = Field(None, ge=0, description="With a token, stricter only: a step moving "
                                             "more nodes is wide (at most the policy's peers.threshold_nodes).")
    peer_threshold_pct: float | None = Field(None, ge=0, le=100, description="With a token, stricter only: a step "
                                             "moving more than this % of live nodes is wide (at most the policy's).")
    action_timeout: Duration = Field(timedelta(minutes=2), gt=timedelta(0))
    provision_timeout: Duration = Field(timedelta(minutes=5), gt=timedelta(0))

    @model_validator(mode="after")
    def _one_target(self) -> CanaryInput:
        if (self.target is None) == (self.mesh_nodes is None):
            raise ValueError("give exactly one of target and mesh_nodes")
        if self.target is not None and not self.target.nodes and self.replicas is None:
            raise ValueError("target: list its nodes, or give replicas (Kubernetes)")
        if (self.agent_id is None) != (self.capability_token is None):
            raise ValueError("agent_id and capability_token go together")
        if (self.canary_labels is None) != (self.stable_labels is None):
            raise ValueError("canary_labels and stable_labels go together")
        return self


class PromoteRequest(BaseModel):
    full: bool = Field(False, description="Skip every remaining step (straight to 100%), not just this bake.")


class StepRecord(BaseModel):
    index: int
    label: str
    nodes: int
    applied_at: datetime
    decision: str = ""
    reasons: list[str] = Field(default_factory=list)


class CanaryStatus(BaseModel):
    name: str
    phase: RolloutPhase
    version: str
    step: int = Field(description="Index of the current step (0-based); -1 before the first.")
    steps: list[PlannedStep] = Field(default_factory=list)
    on_new_version: int = 0
    total_nodes: int = 0
    paused: bool = False
    pause_reason: str = ""
    analysis_interval: timedelta
    last_measurements: list[Measurement] = Field(default_factory=list)
    history: list[StepRecord] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    nodes: list[NodeRef] = Field(default_factory=list, description="The target's nodes.")
    breach_at: datetime | None = Field(None, description="When analysis first saw the failing measurement.")
    step_applied_at: datetime | None = None
    rollback_started_at: datetime | None = None


class CanaryResult(BaseModel):
    name: str
    outcome: RolloutPhase
    version: str
    steps_done: int
    reasons: list[str]
    rolled_back_nodes: list[str] = Field(default_factory=list)
    status: CanaryStatus
