"""Models of ``ExperimentWorkflow``: its input (the spec as JSON or YAML text, plus timeouts), phases, live status
and result."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from westworld.errors import InvalidInput
from westworld.evidence import ChaosEvent, EvidenceRef, FaultRun
from westworld.experiment import ExperimentSpec
from westworld.rollout import CanaryResult
from westworld.sandbox import SandboxRef
from westworld.vote import VoteBackend


class Phase(StrEnum):
    VALIDATING = "validating"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    JUDGING = "judging"
    TEARING_DOWN = "tearing down"
    STORING_EVIDENCE = "storing evidence"
    VOTING = "voting"
    ROLLING_OUT = "rolling out"
    DONE = "done"
    ABORTED = "aborted"
    FAILED = "failed"


class ExperimentInput(BaseModel):
    """Input of ``ExperimentWorkflow`` (id ``experiment:<metadata.name>``): the spec, as the JSON object of the
    YAML file (``spec``) or its text (``spec_yaml``). The spec is validated by the workflow's first step, so a
    malformed one fails with every problem listed."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | None = None
    spec_yaml: str | None = None
    vote_backend: VoteBackend = VoteBackend.OFFCHAIN
    live_update: timedelta = Field(timedelta(seconds=5), description="How often live metrics refresh: collection "
                                   "runs in chunks this long (at least one interval, at most 200 chunks a run).")
    provision_timeout: timedelta = timedelta(minutes=5)
    teardown_timeout: timedelta = timedelta(minutes=3)
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    evidence_timeout: timedelta = timedelta(minutes=2)
    rollout_agent_id: str | None = Field(None, description="The rollout's agent when the spec names none "
                                         "(spec.rollout.agent is the usual place).")
    rollout_capability_token: str | None = Field(None, description="The rollout agent's capability token (a "
                                                 "credential: given here at start, never in the spec).")

    @model_validator(mode="after")
    def _one_spec(self) -> ExperimentInput:
        if (self.spec is None) == (self.spec_yaml is None):
            raise ValueError("give exactly one of spec and spec_yaml")
        return self

    def rollout_agent(self, spec: ExperimentSpec) -> tuple[str, str] | None:
        """The agent the rollout's steps act as and its token, or None (the steps act directly).

        Raises:
            InvalidInput: an agent without its token, a token without its agent, or two different agents.
        """
        plan = spec.spec.rollout
        if plan is None:
            return None
        named, given, token = plan.agent, self.rollout_agent_id, self.rollout_capability_token
        if named is not None and given is not None and named != given:
            raise InvalidInput(f"rollout_agent_id: {given!r} is not spec.rollout.agent ({named!r}); give one of "
                               "them, or the same")
        agent = named or given
        if agent is not None and token is None:
            where = "spec.rollout.agent" if named is not None else "rollout_agent_id"
            raise InvalidInput(f"{where}: agent {agent!r} needs its capability token at start "
                               "(rollout_capability_token; `westworld experiment start --token`), never in the spec")
        if agent is None and token is not None:
            raise InvalidInput("rollout_capability_token: give the agent it was minted for (spec.rollout.agent)")
        return (agent, token) if agent is not None and token is not None else None


class ExperimentStatus(BaseModel):
    name: str
    phase: Phase
    progress: float = Field(0.0, ge=0, le=1, description="Share of the run's duration done.")
    elapsed: timedelta = timedelta(0)
    duration: timedelta = timedelta(0)
    live: dict[str, dict[str, float | None]] = Field(default_factory=dict, description="metric -> arm -> latest")
    chaos: list[ChaosEvent] = Field(default_factory=list)
    faults: list[FaultRun] = Field(default_factory=list, description="Each fault's specified vs actual window "
                                   "(once judged); one not as specified makes the verdict 'invalid'.")
    verdict: str | None = None
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)
    evidence: EvidenceRef | None = None
    vote_workflow_id: str | None = None
    vote_decision: str | None = None
    rollout_workflow_id: str | None = None
    started_at: datetime | None = None
    sandboxes: list[SandboxRef] = Field(default_factory=list, description="Provisioned sandboxes (until torn down).")


class ExperimentResult(BaseModel):
    name: str
    verdict: str | None
    score: float | None
    reasons: list[str]
    evidence: EvidenceRef | None
    aborted: bool = False
    vote_decision: str | None = None
    rollout: CanaryResult | None = None
    audit_seq: int | None = None
