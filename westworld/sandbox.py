"""The sandbox and mesh-action interface shared by both backends (``local`` and ``kubernetes``).

Workflows call one set of activity names whatever the backend; the input names the backend and the activity
class dispatches to it. The activity names (registered by ``activities/sandbox/backend.py``):

    provision_sandbox(ProvisionInput) -> SandboxRef          idempotent by sandbox_id
    apply_fault(FaultInput) -> FaultApplied                   idempotent by fault_id
    clear_fault(FaultInput) -> FaultApplied
    teardown_sandbox(SandboxRef) -> TeardownResult            idempotent; safe on a half-provisioned sandbox
    execute_mesh_action(MeshActionInput) -> MeshActionResult  set a version/config on nodes (canary steps, agents)

Metrics of a sandbox are selected in PromQL with the labels in ``SandboxRef.labels`` (``sandbox``, ``arm``,
``node``), which the backend attaches to every scraped target.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field


class Backend(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class Arm(StrEnum):
    BASELINE = "baseline"
    TREATMENT = "treatment"


class Workload(BaseModel):
    """What runs in the sandbox: the mesh-node version and config under test, and how many nodes."""

    version: str = Field(description="Mesh-node version (local) or container image tag (kubernetes).")
    config: dict[str, str] = Field(default_factory=dict, description="Node config knobs.")
    nodes: int = Field(5, ge=1, le=200, description="Node count.")
    image: str = Field("ghcr.io/westworld/mesh-node", description="Container image (kubernetes backend only).")
    kind: str = Field("Deployment", description="Deployment or DaemonSet (kubernetes backend only).")


class FaultKind(StrEnum):
    LATENCY = "latency"
    PACKET_LOSS = "packet_loss"
    PARTITION = "partition"
    NODE_KILL = "node_kill"


class Fault(BaseModel):
    """One chaos fault: what, to which nodes, starting when (from the run's start) and for how long."""

    kind: FaultKind
    start: timedelta = timedelta(0)
    duration: timedelta
    nodes: list[int] = Field(default_factory=list, description="Node indexes (0-based); empty means all nodes.")
    latency_ms: int = Field(0, ge=0)
    jitter_ms: int = Field(0, ge=0)
    loss_pct: float = Field(0.0, ge=0.0, le=100.0)


class NodeRef(BaseModel):
    id: str
    address: str = Field(description="Where peers reach the node (host:port) or the Pod/Deployment name.")
    admin_url: str = Field("", description="Node admin API (local backend).")
    metrics_url: str = Field("", description="Prometheus endpoint of the node (local backend).")
    version: str = ""


class ProvisionInput(BaseModel):
    backend: Backend
    sandbox_id: str = Field(description="Business key: <experiment>-<arm>; DNS-label safe.")
    arm: Arm
    workload: Workload
    egress_allow: list[str] = Field(default_factory=list, description="CIDRs or host:port the sandbox may reach.")


class SandboxRef(BaseModel):
    backend: Backend
    sandbox_id: str
    arm: Arm
    nodes: list[NodeRef]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="PromQL label matchers for this sandbox.")
    chaos_mode: str = Field("", description="How faults are applied here (netem, userspace, chaos-mesh), and why.")


class FaultInput(BaseModel):
    sandbox: SandboxRef
    fault: Fault
    fault_id: str


class FaultApplied(BaseModel):
    fault_id: str
    nodes: list[str]
    mode: str
    note: str = ""


class TeardownResult(BaseModel):
    sandbox_id: str
    removed: list[str] = Field(default_factory=list)


class MeshAction(StrEnum):
    SET_VERSION = "set_version"
    SET_CONFIG = "set_config"
    RESTART = "restart"


class MeshTarget(BaseModel):
    """The nodes a rollout or an agent acts on: local mesh nodes by id, or a Kubernetes Deployment/DaemonSet."""

    backend: Backend = Backend.LOCAL
    nodes: list[NodeRef] = Field(default_factory=list, description="Local backend: every node of the target.")
    namespace: str | None = None
    kind: str = "Deployment"
    name: str | None = None


class MeshActionInput(BaseModel):
    target: MeshTarget
    action: MeshAction
    node_ids: list[str] = Field(description="The nodes acted on (a subset of the target).")
    version: str | None = None
    config: dict[str, str] = Field(default_factory=dict)
    action_id: str = Field(description="Idempotency key: <workflow id>:<step>.")


class MeshActionResult(BaseModel):
    action_id: str
    applied: list[str]
    previous: dict[str, str] = Field(default_factory=dict, description="node id -> version before the action.")
