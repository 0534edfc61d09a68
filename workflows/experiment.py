"""ExperimentWorkflow: validate the spec, provision a baseline and a treatment sandbox, run both for the spec's
duration with its chaos schedule applied to both and metrics collected every interval, judge, ALWAYS tear down
(on success, failure, abort and cancellation), store the evidence (its hash audited), ask the DAO (a child
DaoVoteWorkflow with the evidence linked) if required, and roll out as a child CanaryRolloutWorkflow if approved
(with ``spec.rollout.agent`` and the token given at start, each step is that agent's capability-bounded action under
``spec.rollout.peer_policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld import sealed as sl
    from westworld.agents import ResealInput
    from westworld.audit import AuditReceipt
    from westworld.errors import INVALID_INPUT, InvalidInput, WestworldError
    from westworld.evidence import (
        ChaosEvent,
        EvidenceBundle,
        EvidenceInput,
        EvidenceRef,
        FaultRun,
        check_faults,
        fault_problems,
    )
    from westworld.experiment import ExperimentSpec, load_spec, parse_spec
    from westworld.experiment_run import ExperimentInput, ExperimentResult, ExperimentStatus, Phase
    from westworld.judge import JudgeResult, MetricSamples, Verdict, invalid_run, judge
    from westworld.rollout import CanaryInput, CanaryResult
    from westworld.sandbox import (
        Arm,
        Backend,
        Fault,
        FaultApplied,
        FaultInput,
        MeshTarget,
        NodeRef,
        ProvisionInput,
        SandboxRef,
        Workload,
    )
    from westworld.series import (
        CollectInput,
        CollectResult,
        MetricQuery,
        Point,
        ScrapeReadyInput,
        ScrapeReadyResult,
        Series,
    )
    from westworld.vote import DaoVoteInput, DaoVoteResult, Proposal
    from workflows.agent_action import TRUST_PATCH, claim_token, load_rule, not_sealed
    from workflows.audit import append_audit
    from workflows.steps import EXPERIMENT_NAME, set_step

SANDBOX_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                            maximum_attempts=5)
TEARDOWN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
COLLECT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
TOKEN_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
ARMS = (Arm.BASELINE, Arm.TREATMENT)


@workflow.defn
class ExperimentWorkflow:
    """Workflow id ``experiment:<metadata.name>``. Signal ``abort``; query ``status``."""

    @workflow.init
    def __init__(self, input: ExperimentInput) -> None:
        self._in = input
        meta = (input.spec or {}).get("metadata") if input.spec else None
        self._name = str(meta.get("name", "?")) if isinstance(meta, dict) else "?"
        self._phase = Phase.VALIDATING
        self._abort = False
        self._spec: ExperimentSpec | None = None
        self._refs: dict[Arm, SandboxRef] = {}
        self._points: dict[tuple[str, str], list[Point]] = {}
        self._chaos: list[ChaosEvent] = []
        self._faults: list[FaultRun] = []
        self._chaos_mode = ""
        self._ran_to_end = False
        self._started: datetime | None = None
        self._ended: datetime | None = None
        self._judged: JudgeResult | None = None
        self._evidence: EvidenceRef | None = None
        self._vote_id: str | None = None
        self._vote_decision: str | None = None
        self._rollout_id: str | None = None
        self._agent: tuple[str, str] | None = None
        self._sealed = False  # the rollout agent's token is sealed (runs started before sealing carry it in clear)

    @workflow.run
    async def run(self, input: ExperimentInput) -> ExperimentResult:
        spec = self._validate(input)
        await self._claim_agent(input, spec)
        self._to(Phase.PROVISIONING)
        try:
            await self._provision(spec)
            await self._run_arms(spec)
        except BaseException:  # failure or cancellation: the sandboxes never outlive the run
            await self._teardown(spec)
            raise
        await self._teardown(spec)
        if self._abort:
            self._to(Phase.ABORTED)
            receipt = await self._audit("experiment.aborted", {"spec_hash": spec.spec_hash()})
            return ExperimentResult(name=spec.name, verdict=None, score=None, reasons=["aborted by an operator"],
                                    evidence=None, aborted=True, audit_seq=receipt.seq)
        self._to(Phase.JUDGING)
        self._judged = self._judge(spec)
        self._to(Phase.STORING_EVIDENCE)
        self._evidence = await workflow.execute_activity(
            "store_evidence", EvidenceInput(bundle=self._bundle(spec, self._judged)), result_type=EvidenceRef,
            start_to_close_timeout=input.evidence_timeout, retry_policy=SANDBOX_RETRY)
        receipt = await self._audit("experiment.verdict", {
            "verdict": self._judged.verdict.value, "score": self._judged.score, "reasons": self._judged.reasons,
            "spec_hash": spec.spec_hash(), "evidence_hash": self._evidence.hash, "evidence_url": self._evidence.url})
        result = ExperimentResult(name=spec.name, verdict=self._judged.verdict.value, score=self._judged.score,
                                  reasons=self._judged.reasons, evidence=self._evidence, audit_seq=receipt.seq)
        approved = await self._decide(spec, self._judged, self._evidence)
        await self._audit("experiment.approval", {
            "approved": approved, "verdict": self._judged.verdict.value, "vote_workflow_id": self._vote_id,
            "vote_decision": self._vote_decision, "evidence_hash": self._evidence.hash,
            "rollout": bool(approved and spec.spec.rollout is not None)})
        if approved and spec.spec.rollout is not None:
            result.rollout = await self._roll_out(spec, self._evidence)
        self._to(Phase.ABORTED if self._abort else Phase.DONE)
        result.vote_decision, result.aborted = self._vote_decision, self._abort
        return result

    def _validate(self, input: ExperimentInput) -> ExperimentSpec:
        try:
            spec = load_spec(input.spec_yaml) if input.spec_yaml is not None else parse_spec(input.spec)
            self._agent = input.rollout_agent(spec)
        except InvalidInput as err:
            self._phase = Phase.FAILED
            raise ApplicationError(err.message, type=INVALID_INPUT, non_retryable=True) from err
        self._spec, self._name = spec, spec.name
        return spec

    async def _provision(self, spec: ExperimentSpec) -> None:
        s = spec.spec
        versions = {Arm.BASELINE: (s.baseline.version, s.baseline.config),
                    Arm.TREATMENT: (s.workload.version, s.workload.config)}

        async def one(arm: Arm) -> None:
            version, config = versions[arm]
            self._refs[arm] = await workflow.execute_activity(
                "provision_sandbox",
                ProvisionInput(backend=s.backend, sandbox_id=keys.sandbox_id(spec.name, arm.value), arm=arm,
                               workload=Workload(version=version, config=config, nodes=s.workload.nodes,
                                                 image=s.workload.image, kind=s.workload.kind),
                               egress_allow=s.isolation.egress_allow),
                result_type=SandboxRef, start_to_close_timeout=self._in.provision_timeout,
                heartbeat_timeout=timedelta(seconds=60), retry_policy=SANDBOX_RETRY)

        await asyncio.gather(*(one(arm) for arm in ARMS))
        self._chaos_mode = "; ".join(f"{r.arm.value}: {r.chaos_mode}" for r in self._refs.values())
        if workflow.patched("experiment-await-scraped") and s.backend is Backend.LOCAL:
            # The run's clock starts only once Prometheus has scraped every node of both arms twice (a rate() has
            # a value); otherwise a loaded machine leaves the first seconds of a short run without samples.
            set_step("experiment: provisioning (waiting for Prometheus to scrape every node)",
                     EXPERIMENT_NAME.value_set(self._name))
            await workflow.execute_activity(
                "await_scraped",
                ScrapeReadyInput(selectors={arm.value: self._refs[arm].labels for arm in ARMS},
                                 targets={arm.value: len(self._refs[arm].nodes) for arm in ARMS}),
                result_type=ScrapeReadyResult, start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=timedelta(seconds=30), retry_policy=SANDBOX_RETRY)

    async def _run_arms(self, spec: ExperimentSpec) -> None:
        s = spec.spec
        self._to(Phase.RUNNING)
        self._started = start = workflow.now()
        chaos = asyncio.create_task(self._chaos_schedule(spec, start))
        queries = [MetricQuery(name=m.name, promql=m.query) for m in s.metrics]
        selectors = {arm.value: self._refs[arm].labels for arm in ARMS}
        # Points at start + k * interval, k = 0 .. ticks-1, collected in chunks of whole intervals (at most 200
        # chunks); each chunk begins on its own first tick, so the series has one point per interval.
        ticks = max(1, int(s.duration / s.interval))
        per_chunk = max(1, round(self._in.live_update / s.interval), math.ceil(ticks / 200))
        done = 0
        try:
            while done < ticks and not self._abort:
                if not await self._wait_until(start + done * s.interval):
                    break
                n = min(per_chunk, ticks - done)
                task = asyncio.ensure_future(workflow.execute_activity(
                    "collect_metrics",
                    CollectInput(collection_id=keys.collection_id(workflow.info().workflow_id, done), queries=queries,
                                 selectors=selectors, duration=s.interval * (n - 1), interval=s.interval),
                    result_type=CollectResult, start_to_close_timeout=s.interval * n + timedelta(minutes=2),
                    heartbeat_timeout=max(self._in.heartbeat_timeout, s.interval * 3), retry_policy=COLLECT_RETRY))
                await workflow.wait_condition(lambda t=task: t.done() or self._abort)  # type: ignore[misc]
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    break
                for series in task.result().series:
                    self._points.setdefault((series.query, series.key), []).extend(series.points)
                done += n
            await self._wait_until(start + s.duration)
            if not self._abort:
                await chaos  # every fault ends by spec.duration: let the last clear land
                self._ran_to_end = True
        finally:
            self._ended = workflow.now()
            if not chaos.done():
                chaos.cancel()
                with contextlib.suppress(BaseException):
                    await chaos

    def _judge(self, spec: ExperimentSpec) -> JudgeResult:
        """Judge only a run whose every fault ran as specified; any other run is invalid (never voted on)."""
        if workflow.patched("experiment-faults-as-specified"):
            self._faults = check_faults(spec.spec.chaos, self._chaos, [arm.value for arm in ARMS])
            if problems := fault_problems(self._faults):
                return invalid_run(problems)
        return judge(spec.spec.metrics, self._samples(spec), spec.spec.judge)

    async def _wait_until(self, at: datetime) -> bool:
        """Wait (durable timer) until ``at`` or an abort; False if aborted."""
        delay = at - workflow.now()
        if delay > timedelta(0) and not self._abort:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._abort, timeout=delay)
        return not self._abort

    async def _chaos_schedule(self, spec: ExperimentSpec, start: datetime) -> None:
        """Apply and clear each fault at its offsets, to both arms alike (so the comparison stays fair)."""
        events: list[tuple[timedelta, int, str]] = []
        for i, f in enumerate(spec.spec.chaos):
            events += [(f.start, i, "apply"), (f.start + f.duration, i, "clear")]
        for at, i, action in sorted(events, key=lambda e: (e[0], e[2] == "apply", e[1])):
            wait = start + at - workflow.now()
            if wait > timedelta(0):
                await workflow.sleep(wait)
            f = spec.spec.chaos[i]
            fault = Fault(kind=f.kind, start=f.start, duration=f.duration, nodes=f.nodes, latency_ms=f.latency_ms,
                          jitter_ms=f.jitter_ms, loss_pct=f.loss_pct)
            await asyncio.gather(*(self._fault(arm, fault, i, action, start) for arm in ARMS))

    async def _fault(self, arm: Arm, fault: Fault, index: int, action: str, start: datetime) -> None:
        """Apply or clear one fault on one arm; the event records when it was asked for and when it had landed
        (a worker that was down over the instant shows as a late one)."""
        assert self._spec is not None
        fault_id = f"{self._spec.name}-{arm.value}-chaos-{index}"
        name = "apply_fault" if action == "apply" else "clear_fault"
        sent = (workflow.now() - start).total_seconds()
        try:
            done = await workflow.execute_activity(
                name, FaultInput(sandbox=self._refs[arm], fault=fault, fault_id=fault_id), result_type=FaultApplied,
                start_to_close_timeout=timedelta(seconds=60), retry_policy=SANDBOX_RETRY)
            event = ChaosEvent(fault_id=fault_id, kind=fault.kind.value, arm=arm.value, nodes=done.nodes,
                               mode=done.mode, note=done.note, offset_s=(workflow.now() - start).total_seconds(),
                               action="applied" if action == "apply" else "cleared", fault=index, step=action,
                               sent_s=sent)
        except ActivityError as err:  # the fault's activity failed: recorded in the evidence; the run goes on and
            if is_cancelled_exception(err):  # the judge sees the effect. A cancellation is no failed fault, and
                raise  # a bug in this code is no fault at all: both go through
            event = ChaosEvent(fault_id=fault_id, kind=fault.kind.value, arm=arm.value, action="failed",
                               offset_s=(workflow.now() - start).total_seconds(), note=str(err.__cause__ or err),
                               fault=index, step=action, sent_s=sent)
        self._chaos.append(event)

    async def _teardown(self, spec: ExperimentSpec) -> None:
        self._to(Phase.TEARING_DOWN)

        async def one(arm: Arm) -> None:
            ref = self._refs.get(arm) or SandboxRef(backend=spec.spec.backend,
                                                    sandbox_id=keys.sandbox_id(spec.name, arm.value),
                                                    arm=arm, nodes=[])
            await workflow.execute_activity("teardown_sandbox", ref, start_to_close_timeout=self._in.teardown_timeout,
                                            heartbeat_timeout=timedelta(seconds=60), retry_policy=TEARDOWN_RETRY)
            self._refs.pop(arm, None)

        await asyncio.gather(*(one(arm) for arm in ARMS))

    def _samples(self, spec: ExperimentSpec) -> dict[str, MetricSamples]:
        return {m.name: MetricSamples(
            baseline=[p.value for p in self._points.get((m.name, Arm.BASELINE.value), [])],
            treatment=[p.value for p in self._points.get((m.name, Arm.TREATMENT.value), [])])
            for m in spec.spec.metrics}

    def _bundle(self, spec: ExperimentSpec, judged: JudgeResult) -> EvidenceBundle:
        assert self._started is not None and self._ended is not None
        return EvidenceBundle(
            experiment=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json", by_alias=True),
            started_at=self._started, ended_at=self._ended,
            chaos_mode=self._chaos_mode,
            chaos_timeline=self._chaos, faults=self._faults, judgement=judged,
            series=[Series(query=q, key=k, points=p) for (q, k), p in sorted(self._points.items())])

    async def _decide(self, spec: ExperimentSpec, judged: JudgeResult, evidence: EvidenceRef) -> bool:
        """Approved for rollout? A failed verdict never is; with a vote required, the DAO decides (a marginal
        verdict goes to the vote with its reasons); without one, only a pass is."""
        if judged.verdict in (Verdict.FAIL, Verdict.INVALID) or not spec.spec.dao_vote_required:
            return judged.verdict is Verdict.PASS
        self._to(Phase.VOTING)
        pid = keys.experiment_proposal_id(spec.name, evidence.hash)
        self._vote_id = keys.vote_id(pid)
        body = (f"{spec.spec.objective}\n\nVerdict: {judged.verdict.value} (score {judged.score:.1f}).\n"
                + "\n".join(f"- {r}" for r in judged.reasons)
                + f"\n\nEvidence bundle sha256 {evidence.hash} (spec sha256 {spec.spec_hash()}).")
        child = await workflow.start_child_workflow(
            "DaoVoteWorkflow",
            DaoVoteInput(proposal=Proposal(id=pid, title=f"Roll out mesh-node {spec.spec.workload.version} "
                                                         f"({spec.name})", body=body, evidence_url=evidence.url),
                         voting_window=spec.spec.vote.window, quorum=spec.spec.vote.quorum,
                         approval_threshold=spec.spec.vote.approval_threshold, backend=self._in.vote_backend),
            id=self._vote_id, result_type=DaoVoteResult)
        await workflow.wait_condition(lambda: child.done() or self._abort)
        if not child.done():  # aborted while the DAO votes: the vote is cancelled, nothing rolls out
            child.cancel()
            with contextlib.suppress(BaseException):
                await child
            self._vote_decision = "cancelled (experiment aborted)"
            return False
        try:
            vote: DaoVoteResult = child.result()
        except ChildWorkflowError as err:  # the vote could not be held: nothing rolls out, and the result says why
            root: BaseException = err
            while root.__cause__ is not None:
                root = root.__cause__
            self._vote_decision = f"vote failed: {root}"
            return False
        self._vote_decision = vote.decision
        return bool(vote.decision == "approved")

    async def _roll_out(self, spec: ExperimentSpec, evidence: EvidenceRef) -> CanaryResult:
        """The approved rollout as a child canary; with an agent, each step is that agent's capability-bounded
        action under the spec's peer policy (the canary's own defaults without one)."""
        plan = spec.spec.rollout
        assert plan is not None
        self._to(Phase.ROLLING_OUT)
        t = plan.target
        target = None
        if t.mesh_nodes is None:
            target = MeshTarget(backend=t.backend, namespace=t.namespace, kind=t.kind, name=t.name,
                                nodes=[NodeRef(id=n, address=n) for n in t.node_ids])
        names = set(plan.metrics) or {m.name for m in spec.spec.metrics}
        agent_id, token = self._agent or (None, None)
        policy: dict[str, Any] = {}
        if plan.peer_policy is not None:
            p = plan.peer_policy
            policy = {k: v for k, v in {"peers_required": p.threshold, "peer_threshold_nodes": p.wide_nodes,
                                        "peer_threshold_pct": p.wide_pct, "peer_wait": p.wait}.items()
                      if v is not None}
        self._rollout_id = keys.canary_id(spec.name)
        canary = CanaryInput(name=spec.name, version=spec.spec.workload.version, config=spec.spec.workload.config,
                             target=target, mesh_nodes=t.mesh_nodes,
                             mesh_version=t.mesh_version or spec.spec.baseline.version,
                             steps=plan.steps, bake_time=plan.bake_time, analysis_interval=plan.analysis_interval,
                             replicas=t.replicas, canary_labels=t.canary_labels, stable_labels=t.stable_labels,
                             metrics=[m for m in spec.spec.metrics if m.name in names], evidence_hash=evidence.hash,
                             agent_id=agent_id, capability_token=token, **policy)
        if self._sealed and token is not None:  # the worker re-seals the token for this rollout only
            canary.capability_token = await workflow.execute_activity(
                "reseal_token", ResealInput(
                    token=token, input_digest=sl.input_digest(self._in, "rollout_capability_token"),
                    child=sl.Binding(workflow_type="CanaryRolloutWorkflow", workflow_id=self._rollout_id,
                                     input_digest=sl.input_digest(canary, "capability_token"))),
                result_type=str, start_to_close_timeout=timedelta(seconds=30), retry_policy=TOKEN_RETRY)
        child = await workflow.start_child_workflow(
            "CanaryRolloutWorkflow", canary, id=self._rollout_id, result_type=CanaryResult)
        await workflow.wait_condition(lambda: child.done() or self._abort)
        if not child.done():  # aborted during the rollout: the canary rolls every moved node back
            await child.signal("abort")
        result: CanaryResult = await child
        return result

    async def _claim_agent(self, input: ExperimentInput, spec: ExperimentSpec) -> None:
        """With a rollout agent, before anything runs: the spec's peer policy is no looser than the network's, and
        the token is sealed for this experiment and input (the worker claims it for this run; it names the agent)."""
        if self._agent is None or not workflow.patched(TRUST_PATCH):
            return
        agent, token = self._agent
        plan = spec.spec.rollout
        p = plan.peer_policy if plan is not None else None
        try:
            if p is not None:
                await load_rule(f"experiment {spec.name}: spec.rollout.peer_policy", threshold_nodes=p.wide_nodes,
                                threshold_pct=p.wide_pct, peers_required=p.threshold, wait=p.wait,
                                names=("wide_nodes", "wide_pct", "threshold"))
            if not sl.is_sealed(token):
                raise not_sealed(f"experiment {spec.name}", "rollout_capability_token", token)
        except WestworldError as err:
            self._phase = Phase.FAILED
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from None
        try:
            claim = await claim_token(f"experiment {spec.name}", token,
                                      sl.input_digest(input, "rollout_capability_token"))
        except ApplicationError:
            self._phase = Phase.FAILED
            raise
        if claim.agent_id != agent:
            self._phase = Phase.FAILED
            raise ApplicationError(f"experiment {spec.name}: the sealed token belongs to agent {claim.agent_id!r}, "
                                   f"not {agent!r} (spec.rollout.agent)", type=INVALID_INPUT, non_retryable=True)
        self._sealed = True

    async def _audit(self, kind: str, payload: dict[str, Any]) -> AuditReceipt:
        receipt: AuditReceipt = await append_audit(kind, self._name, payload)
        return receipt

    def _to(self, phase: Phase) -> None:
        self._phase = phase
        set_step(f"experiment: {phase.value}", EXPERIMENT_NAME.value_set(self._name))

    @workflow.signal
    def abort(self) -> None:
        self._abort = True

    @workflow.query
    def status(self) -> ExperimentStatus:
        spec = self._spec
        duration = spec.spec.duration if spec else timedelta(0)
        elapsed = timedelta(0)
        if self._started is not None:
            elapsed = min(duration, (self._ended or workflow.now()) - self._started)
            if self._ran_to_end:
                elapsed = duration
        live: dict[str, dict[str, float | None]] = {}
        for (query, key), points in self._points.items():
            latest = next((p.value for p in reversed(points) if p.value is not None), None)
            live.setdefault(query, {})[key] = latest
        return ExperimentStatus(
            name=self._name, phase=self._phase, duration=duration, elapsed=elapsed,
            progress=min(1.0, elapsed / duration) if duration else 0.0, live=live, chaos=self._chaos,
            faults=self._faults,
            verdict=self._judged.verdict.value if self._judged else None,
            score=self._judged.score if self._judged else None,
            reasons=self._judged.reasons if self._judged else [], evidence=self._evidence,
            vote_workflow_id=self._vote_id, vote_decision=self._vote_decision, rollout_workflow_id=self._rollout_id,
            started_at=self._started, sandboxes=list(self._refs.values()))
