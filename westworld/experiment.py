"""The experiment spec (the seeds' ``metadata``/``spec`` shape, extended) and its validation.

``load_spec(text)`` parses YAML or JSON and raises one :class:`InvalidInput` listing EVERY problem with its path
(``spec.chaos[1].duration: must end before spec.duration (30s)``) and, where the text shows it, its line:
structural problems from the models and the cross-field rules (faults end before the run does, node indexes
exist, metric names are unique, rollout steps grow and end at all nodes, a peer policy has its agent) are
reported together.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from westworld.audit import canonical_json
from westworld.documents import Document, parse_document
from westworld.durations import Duration, parse_duration
from westworld.errors import InvalidInput
from westworld.sandbox import Backend, FaultKind

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
AGENT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # the agent a capability token names (westworld.capability.AGENT)
_STEP = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


def format_duration(d: timedelta) -> str:
    total = d.total_seconds()
    if total < 1:
        return f"{round(total * 1000)}ms"
    parts, rest = [], int(total)
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a threshold or weight of .nan/.inf: refused


class Direction(StrEnum):
    """Which way is better for a metric; a move the other way beyond the tolerance is a regression."""

    LOWER = "lower"
    HIGHER = "higher"
    EITHER = "either"  # any significant change is a regression


class Threshold(_Strict):
    max: float | None = Field(None, description="A measurement above this fails.")
    min: float | None = Field(None, description="A measurement below this fails.")


class MetricSpec(_Strict):
    """A named PromQL query (``{selector}`` is replaced by the arm's or node group's label matchers) and how
    it is judged: a threshold on every measurement (Argo Rollouts' analysis) and/or treatment vs baseline
    (Mann-Whitney U, Kayenta's judge)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    query: str = Field(min_length=1)
    direction: Direction = Direction.LOWER
    threshold: Threshold | None = None
    compare_to_baseline: bool = True
    tolerance: float = Field(0.10, ge=0, le=10, description="Relative change in the bad direction tolerated.")
    failure_limit: int = Field(0, ge=0, description="Failed measurements tolerated before the metric fails.")
    consecutive_successes: int = Field(1, ge=1, description="Consecutive good measurements needed to pass.")
    weight: float = Field(1.0, gt=0)
    critical: bool = Field(False, description="A failing critical metric fails the whole verdict.")

    @field_validator("query")
    @classmethod
    def _has_selector(cls, v: str) -> str:
        if "{selector}" not in v:
            raise ValueError("must contain {selector} where the arm's label matchers go")
        return v


class JudgeConfig(_Strict):
    confidence: float = Field(0.95, gt=0.5, lt=1)
    pass_score: float = Field(95, ge=0, le=100)
    marginal_score: float = Field(75, ge=0, le=100)
    min_samples: int = Field(3, ge=2, description="Fewer points in an arm means no data for that metric.")


class VersionSpec(_Strict):
    version: str = Field(min_length=1, max_length=128)
    config: dict[str, str] = Field(default_factory=dict)


class WorkloadSpec(VersionSpec):
    nodes: int = Field(3, ge=1, le=200)
    image: str = "ghcr.io/westworld/mesh-node"
    kind: Literal["Deployment", "DaemonSet"] = "Deployment"


class IsolationSpec(_Strict):
    egress_allow: list[str] = Field(default_factory=list, description="CIDRs or host:port the sandbox may reach.")

    @field_validator("egress_allow")
    @classmethod
    def _egress(cls, v: list[str]) -> list[str]:
        for item in v:
            if not _is_egress(item):
                raise ValueError(f"{item!r} is neither a CIDR nor host:port")
        return v


class FaultSpec(_Strict):
    kind: FaultKind
    start: Duration = timedelta(0)
    duration: Duration
    nodes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    latency_ms: int = Field(0, ge=0, le=60_000)
    jitter_ms: int = Field(0, ge=0, le=60_000)
    loss_pct: float = Field(0.0, ge=0.0, le=100.0)


class VoteSpec(_Strict):
    window: Duration = timedelta(hours=72)
    quorum: float = Field(0.04, gt=0, le=1)
    approval_threshold: float = Field(0.5, ge=0, lt=1)


class TargetSpec(_Strict):
    """The rollout target: local mesh nodes (listed, or a mesh of ``mesh_nodes`` provisioned for the rollout)
    or a Kubernetes Deployment/DaemonSet."""

    backend: Backend = Backend.LOCAL
    mesh_nodes: int | None = Field(None, ge=1, le=500, description="Local: provision a mesh of this many nodes.")
    mesh_version: str | None = Field(None, description="Version the provisioned mesh starts at (the baseline's).")
    node_ids: list[str] = Field(default_factory=list, description="Local: existing nodes by id.")
    namespace: str | None = None
    kind: Literal["Deployment", "DaemonSet"] = "Deployment"
    name: str | None = None
    replicas: int | None = Field(None, ge=1, le=10_000, description="Kubernetes: replicas the steps count.")
    canary_labels: dict[str, str] | None = Field(None, description="Kubernetes: matchers of the canary's series.")
    stable_labels: dict[str, str] | None = Field(None, description="Kubernetes: matchers of the stable series.")


DEFAULT_STEPS = ("1%", "5%", "25%", "50%", "100%")
RolloutStep = Annotated[int | str, Field(union_mode="left_to_right")]


class PeerPolicySpec(_Strict):
    """Stricter than the network policy only: which steps of the rollout's agent are *wide*, and how many peers
    must sign one (the canary's ``peer_threshold_nodes``, ``peer_threshold_pct``, ``peers_required`` and
    ``peer_wait``). A field left out is the network policy's (``NetworkPolicy.peers``); a looser one (a larger
    threshold, a smaller k) fails the experiment at its start with ``LooserThanPolicy`` naming the policy's value."""

    threshold: int | None = Field(None, ge=1, le=64, description="k: distinct registered peers that must sign a "
                                  "wide step (at least the policy's peers.peers_required, 3 by default).")
    wide_nodes: int | None = Field(None, ge=0, description="A step moving more nodes than this is wide (at most "
                                   "the policy's peers.threshold_nodes).")
    wide_pct: float | None = Field(None, ge=0, le=100, description="A step moving more than this % of live nodes is "
                                   "wide (at most the policy's peers.threshold_pct).")
    wait: Duration | None = Field(None, description="How long a wide step waits for its signatures (default 1h, at "
                                  "most the policy's peers.wait_max); then it is denied and the rollout rolls back.")


class RolloutSpec(_Strict):
    target: TargetSpec
    steps: list[RolloutStep] = Field(default_factory=lambda: list[int | str](DEFAULT_STEPS), min_length=1)
    bake_time: Duration = timedelta(minutes=10)
    analysis_interval: Duration = timedelta(minutes=1)
    metrics: list[str] = Field(default_factory=list, description="Metric names analysed each step; empty: all.")
    agent: str | None = Field(None, pattern=AGENT_PATTERN, description="Each step runs as this agent's capability-"
                              "bounded action; its token is given at start (never in the spec: it is a credential).")
    peer_policy: PeerPolicySpec | None = Field(None, description="With an agent: wide steps and their peers.")

    @model_serializer(mode="wrap")
    def _without_unset_agent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A spec written without these fields dumps (and so hashes) as it did before they existed.
        data: dict[str, Any] = handler(self)
        for key in ("agent", "peer_policy"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Spec(_Strict):
    objective: str = Field(min_length=1, max_length=2000)
    duration: Duration
    interval: Duration = Field(timedelta(seconds=15), description="Metric collection interval.")
    dao_vote_required: bool = True
    backend: Backend = Backend.LOCAL
    baseline: VersionSpec
    workload: WorkloadSpec
    isolation: IsolationSpec = Field(default_factory=IsolationSpec)
    chaos: list[FaultSpec] = Field(default_factory=list)
    metrics: list[MetricSpec] = Field(min_length=1)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    vote: VoteSpec = Field(default_factory=VoteSpec)
    rollout: RolloutSpec | None = None


class Metadata(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Business key (DNS label, at most 40 characters).")
    labels: dict[str, str] = Field(default_factory=dict)


class ExperimentSpec(_Strict):
    api_version: str = Field("westworld/v1", alias="apiVersion")
    kind: Literal["Experiment"] = "Experiment"
    metadata: Metadata
    spec: Spec

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON of the validated spec (what the evidence and the vote refer to)."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json", by_alias=True)).encode()).hexdigest()


def step_count(step: int | str, total: int) -> int:
    """Nodes reached by a rollout step over ``total`` nodes: a count, or a share rounded up (at least one)."""
    if isinstance(step, int):
        return min(step, total)
    share = float(_STEP.match(step).group(1)) if _STEP.match(step) else 0.0  # type: ignore[union-attr]
    return max(1, math.ceil(share * total / 100 - 1e-9))


# -- loading and validation ---------------------------------------------------------------------------------

def load_spec(text: str | bytes, source: str = "") -> ExperimentSpec:
    """Parse and validate a spec (YAML or JSON) with the safe loader (``westworld/documents.py``: UTF-8, size,
    alias, depth and duplicate-key limits).

    Raises:
        InvalidInput: a document that cannot be read (``SOURCE:LINE:COLUMN: problem``), or every problem found,
            one per line, each ``path: problem`` (with its line where known).
    """
    return parse_spec_document(parse_document(text, source))


def parse_spec_document(doc: Document) -> ExperimentSpec:
    """Validate a document parsed by :func:`westworld.documents.parse_document`. Raises InvalidInput."""
    return parse_spec(doc.data, doc.root)


def parse_spec(data: Any, root: yaml.Node | None = None) -> ExperimentSpec:
    """Validate already-parsed data (e.g. the JSON a workflow was started with). Raises InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput(f"(top): expected a mapping with metadata and spec, got {type(data).__name__}")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    spec: ExperimentSpec | None = None
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            problems.append((tuple(_loc(e["loc"])), _message(e)))
    problems += cross_checks(data)
    if problems:
        lines = [f"  {_where(path, root)}: {msg}" for path, msg in _unique(problems)]
        raise InvalidInput(f"{len(lines)} problem(s) in the experiment spec:\n" + "\n".join(lines))
    assert spec is not None
    return spec


def cross_checks(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules across fields, read leniently from the raw data so they are reported alongside model errors
    (a value that is itself malformed is reported by the model and skipped here)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    duration, interval = _dur(spec.get("duration")), _dur(spec.get("interval", "15s"))
    if duration is not None and duration <= timedelta(0):
        out.append((("spec", "duration"), "must be positive"))
    if duration is not None and interval is not None:
        if interval <= timedelta(0):
            out.append((("spec", "interval"), "must be positive"))
        elif interval > duration:
            default = "" if "interval" in spec else f" (it defaults to {format_duration(interval)}: set it)"
            out.append((("spec", "interval"), f"must not exceed spec.duration ({format_duration(duration)}){default}"))
    workload = spec.get("workload") if isinstance(spec.get("workload"), dict) else {}
    assert isinstance(workload, dict)
    nodes = workload.get("nodes", 3)
    nodes = nodes if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes >= 1 else None
    chaos = spec.get("chaos") if isinstance(spec.get("chaos"), list) else []
    assert isinstance(chaos, list)
    for i, fault in enumerate(chaos):
        if isinstance(fault, dict):
            out += _fault_checks(("spec", "chaos", i), fault, duration, nodes)
    metrics = spec.get("metrics") if isinstance(spec.get("metrics"), list) else []
    assert isinstance(metrics, list)
    names: dict[str, int] = {}
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            continue
        name = m.get("name")
        if isinstance(name, str):
            if name in names:
                out.append((("spec", "metrics", i, "name"), f"duplicate metric name {name!r} "
                                                            f"(also spec.metrics[{names[name]}])"))
            names.setdefault(name, i)
        t = m.get("threshold")
        if isinstance(t, dict) and _num(t.get("min")) is not None and _num(t.get("max")) is not None \
                and _num(t["min"]) > _num(t["max"]):  # type: ignore[operator]
            out.append((("spec", "metrics", i, "threshold"), "min must not exceed max"))
        if isinstance(m, dict) and m.get("threshold") is None and m.get("compare_to_baseline") is False:
            out.append((("spec", "metrics", i), "judges nothing: give a threshold or compare_to_baseline"))
    judge = spec.get("judge")
    if isinstance(judge, dict):
        p, mg = _num(judge.get("pass_score", 95)), _num(judge.get("marginal_score", 75))
        if p is not None and mg is not None and mg > p:
            out.append((("spec", "judge", "marginal_score"), f"must not exceed pass_score ({p:g})"))
    rollout = spec.get("rollout")
    if isinstance(rollout, dict):
        out += _rollout_checks(rollout, set(names))
    return out


def _fault_checks(path: tuple[str | int, ...], fault: dict[str, Any], duration: timedelta | None,
                  nodes: int | None) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    start, length = _dur(fault.get("start", 0)), _dur(fault.get("duration"))
    if start is not None and start < timedelta(0):
        out.append(((*path, "start"), "must not be negative"))
    if length is not None and length <= timedelta(0):
        out.append(((*path, "duration"), "must be positive"))
    if start is not None and length is not None and duration is not None and start + length > duration:
        out.append(((*path, "duration"), f"must end before spec.duration ({format_duration(duration)}); "
                                         f"it ends at {format_duration(start + length)}"))
    idx = fault.get("nodes", [])
    if isinstance(idx, list) and nodes is not None:
        for j, n in enumerate(idx):
            if isinstance(n, int) and n >= nodes:
                out.append(((*path, "nodes", j), f"node index {n} does not exist "
                                                 f"(spec.workload.nodes is {nodes}: 0..{nodes - 1})"))
    kind = fault.get("kind")
    if kind == "latency" and not _positive(fault.get("latency_ms")):
        out.append(((*path, "latency_ms"), "a latency fault needs latency_ms > 0"))
    if kind == "packet_loss" and not _positive(fault.get("loss_pct")):
        out.append(((*path, "loss_pct"), "a packet_loss fault needs loss_pct > 0"))
    if kind in {"partition", "node_kill"} and isinstance(idx, list) and not idx:
        out.append(((*path, "nodes"), f"a {kind} fault needs the node indexes it affects"))
    if kind == "partition" and isinstance(idx, list) and nodes is not None and len(set(idx)) >= nodes:
        out.append(((*path, "nodes"), "a partition needs nodes on both sides: leave at least one node out"))
    return out


def _rollout_checks(rollout: dict[str, Any], metric_names: set[str]) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    target = rollout.get("target") if isinstance(rollout.get("target"), dict) else {}
    assert isinstance(target, dict)
    total: int | None = None
    if target.get("backend", "local") == "local":
        ids, mesh = target.get("node_ids") or [], target.get("mesh_nodes")
        if isinstance(mesh, int) and ids:
            out.append((("spec", "rollout", "target"), "give node_ids or mesh_nodes, not both"))
        elif not ids and mesh is None:
            out.append((("spec", "rollout", "target"), "a local target needs node_ids or mesh_nodes"))
        total = mesh if isinstance(mesh, int) else (len(ids) if isinstance(ids, list) and ids else None)
    else:
        if not target.get("name"):
            out.append((("spec", "rollout", "target", "name"),
                        "a kubernetes target needs the Deployment/DaemonSet name"))
        if not isinstance(target.get("replicas"), int):
            out.append((("spec", "rollout", "target", "replicas"),
                        "a kubernetes target needs its replica count (steps count replicas)"))
        else:
            total = target["replicas"]
    steps = rollout.get("steps", ["1%", "5%", "25%", "50%", "100%"])
    if isinstance(steps, list):
        previous: float = 0
        for i, s in enumerate(steps):
            if isinstance(s, bool) or not isinstance(s, int | str):
                continue
            if isinstance(s, str) and not _STEP.match(s.strip()):
                out.append((("spec", "rollout", "steps", i), f"{s!r} is neither a node count nor a share like '25%'"))
                continue
            size = float(_STEP.match(s.strip()).group(1)) if isinstance(s, str) else s  # type: ignore[union-attr]
            if isinstance(s, str) and not 0 < size <= 100:
                out.append((("spec", "rollout", "steps", i), "a share must be in (0%, 100%]"))
            elif isinstance(s, int) and s < 1:
                out.append((("spec", "rollout", "steps", i), "a node count must be at least 1"))
            elif isinstance(s, int) and total is not None and s > total:
                out.append((("spec", "rollout", "steps", i), f"{s} nodes exceeds the target's {total}"))
            else:
                key = size if isinstance(s, str) or total is None else s * 100 / total
                if key <= previous and i > 0:
                    out.append((("spec", "rollout", "steps", i), "steps must grow"))
                previous = max(previous, key)
        if steps and isinstance(steps[-1], int | str) and not isinstance(steps[-1], bool):
            last = steps[-1]
            ends_all = (isinstance(last, str) and _STEP.match(last.strip()) is not None
                        and float(_STEP.match(last.strip()).group(1)) == 100) or (  # type: ignore[union-attr]
                isinstance(last, int) and total is not None and last == total)
            if not ends_all:
                out.append((("spec", "rollout", "steps", len(steps) - 1),
                            "the last step must reach every node ('100%'"
                            + (f" or {total})" if total is not None else ")")))
    bake, interval = _dur(rollout.get("bake_time", "10m")), _dur(rollout.get("analysis_interval", "1m"))
    if bake is not None and interval is not None and bake > timedelta(0) and interval > bake:  # 0s: no bake
        out.append((("spec", "rollout", "analysis_interval"), "must not exceed bake_time"))
    if interval is not None and interval <= timedelta(0):
        out.append((("spec", "rollout", "analysis_interval"), "must be positive"))
    names = rollout.get("metrics", [])
    if isinstance(names, list):
        for i, n in enumerate(names):
            if isinstance(n, str) and n not in metric_names:
                out.append((("spec", "rollout", "metrics", i), f"unknown metric {n!r} (not in spec.metrics)"))
    policy = rollout.get("peer_policy")
    if isinstance(policy, dict):
        if rollout.get("agent") is None:
            out.append((("spec", "rollout", "peer_policy"), "applies to steps run as an agent: set spec.rollout.agent"))
        wait = _dur(policy.get("wait", "1h"))
        if wait is not None and wait <= timedelta(0):
            out.append((("spec", "rollout", "peer_policy", "wait"), "must be positive"))
    return out


def _loc(loc: tuple[int | str, ...]) -> list[str | int]:
    # Union members show up in pydantic's location ('int', 'str', function-before[...]): not part of the path.
    return [p for p in loc if not (isinstance(p, str) and (p in {"int", "str", "float"} or "[" in p))]


def _message(e: Any) -> str:
    kind, msg = e["type"], e["msg"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind == "string_pattern_mismatch" and tuple(e["loc"]) == ("metadata", "name"):
        return f"{e.get('input')!r} is not a DNS label: lowercase letters, digits and '-', at most 40 characters"
    if kind == "string_pattern_mismatch" and tuple(e["loc"]) == ("spec", "rollout", "agent"):
        return f"{e.get('input')!r} is not an agent id: letters, digits, '.', '_' and '-', at most 64 characters"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind in {"literal_error", "enum"}:
        return f"{msg} (got {e.get('input')!r})"
    return str(msg)


def _unique(problems: list[tuple[tuple[str | int, ...], str]]) -> list[tuple[tuple[str | int, ...], str]]:
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top)"


def _where(path: tuple[str | int, ...], root: yaml.Node | None) -> str:
    line = _line_of(path, root)
    return format_path(path) + (f" (line {line})" if line else "")


def _line_of(path: tuple[str | int, ...], node: yaml.Node | None) -> int | None:
    """The line of the deepest node of ``path`` present in the YAML text."""
    best = None
    for p in path:
        if node is None:
            break
        best = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode) and isinstance(p, str):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == p:
                    best, nxt = k.start_mark.line + 1, v
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            nxt = node.value[p]
        node = nxt
    if node is not None:
        best = node.start_mark.line + 1
    return best


def _dur(value: Any) -> timedelta | None:
    try:
        d = parse_duration(value)
    except ValueError:
        return None
    return d if isinstance(d, timedelta) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _positive(value: Any) -> bool:
    n = _num(value)
    return n is not None and n > 0


def _is_egress(item: str) -> bool:
    try:
        ipaddress.ip_network(item, strict=False)
        return True
    except ValueError:
        pass
    host, _, port = item.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536 and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+",
                                                                                     host) is not None
