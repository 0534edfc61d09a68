"""CanaryRolloutWorkflow: a version rolled out over mesh nodes step by step (shares or counts), each step baked
with analysis every interval (canary nodes vs the rest, and thresholds), rolled back automatically to each node's
previous version when a metric fails, paused/resumed/promoted/aborted by signal, every step audited.

Every change to the mesh goes through :meth:`CanaryRolloutWorkflow._act`. With ``agent_id``/``capability_token``
in the input each step is a capability-bounded agent action: a child ``AgentActionWorkflow`` checks the token's
caveats (and collects peer signatures for a wide step) before it executes; a denied step rolls back what the
rollout moved. The token arrives sealed for this rollout and input (westworld/sealed.py); the worker claims it at
the start and re-seals it for each step's action, so no token is ever in history. The peer rule is the network
policy's: the input may ask for stricter, and a looser ask fails at the start (``LooserThanPolicy``).
Rollbacks restore each node's previous version directly, audited but not checked: a halted network
or an exhausted budget must never trap the mesh half-way on a build the analysis rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld import sealed as sl
    from westworld.agents import AgentActionInput, AgentActionResult, RegisterNodesInput, ResealInput
    from westworld.canary import (
        TARGETS_QUERY,
        Decision,
        Measurement,
        PlannedStep,
        StepAnalysis,
        WatchInput,
        WatchResult,
        analyse_step,
        confirmed_breach,
        group_query,
        measure,
        plan_steps,
    )
    from westworld.errors import INVALID_INPUT, StepDenied, WestworldError
    from westworld.rollout import (
        CanaryInput,
        CanaryResult,
        CanaryStatus,
        PromoteRequest,
        RolloutPhase,
        StepRecord,
    )
    from westworld.sandbox import (
        Arm,
        Backend,
        MeshAction,
        MeshActionInput,
        MeshActionResult,
        MeshTarget,
        NodeRef,
        ProvisionInput,
        SandboxRef,
        Workload,
    )
    from westworld.series import (
        InstantQueryInput,
        InstantQueryResult,
        MetricQuery,
        ScrapeReadyInput,
        ScrapeReadyResult,
        expand,
    )
    from workflows.agent_action import TRUST_PATCH, claim_token, load_rule, not_sealed
    from workflows.audit import append_audit
    from workflows.steps import EXPERIMENT_NAME, set_step

ACTION_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20),
                           maximum_attempts=10)
QUERY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=3)
WATCH_PATCH = "canary-watch-fresh-scrapes"


def _ignore_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


@workflow.defn
class CanaryRolloutWorkflow:
    """Workflow id ``canary:<name>``."""

    @workflow.init
    def __init__(self, input: CanaryInput) -> None:
        self._in = input
        self._phase = RolloutPhase.PROVISIONING
        self._paused = False
        self._pause_reason = ""
        self._abort = False
        self._promote: PromoteRequest | None = None
        self._plan: list[PlannedStep] = []
        self._step = -1
        self._previous: dict[str, str] = {}
        self._history: list[StepRecord] = []
        self._measurements: list[Measurement] = []
        self._reasons: list[str] = []
        self._reference: dict[str, float | None] = {}
        self._target: MeshTarget | None = input.target
        self._labels = dict(input.selector_labels)
        self._mesh: SandboxRef | None = None
        self._registered: list[str] = []  # nodes this rollout added to the capability registry (its own mesh's)
        self._on_new = 0
        self._status_times: dict[str, Any] = {"breach_at": None, "step_applied_at": None,
                                              "rollback_started_at": None}
        self._sealed = False  # the token is sealed (runs started before sealing carry it in clear)

    @workflow.run
    async def run(self, input: CanaryInput) -> CanaryResult:
        try:
            return await self._rollout(input)
        except BaseException:
            await self._release_mesh()
            raise

    async def _rollout(self, input: CanaryInput) -> CanaryResult:
        if input.agent_id is not None and workflow.patched(TRUST_PATCH):
            await self._claim_token(input)
        if input.mesh_nodes is not None:
            self._to(RolloutPhase.PROVISIONING, "provisioning the mesh")
            self._mesh = await workflow.execute_activity(
                "provision_sandbox",
                ProvisionInput(backend=Backend.LOCAL, sandbox_id=keys.canary_mesh_id(input.name), arm=Arm.BASELINE,
                               workload=Workload(version=input.mesh_version, nodes=input.mesh_nodes)),
                result_type=SandboxRef, start_to_close_timeout=input.provision_timeout,
                heartbeat_timeout=timedelta(seconds=60), retry_policy=ACTION_RETRY)
            self._target = MeshTarget(backend=Backend.LOCAL, nodes=self._mesh.nodes)
            self._labels = {**self._mesh.labels, **self._labels}
            if input.agent_id is not None:  # the mesh this rollout made is registered so checks can count it
                self._registered = await workflow.execute_activity(
                    "register_nodes", RegisterNodesInput(node_ids=[n.id for n in self._mesh.nodes]),
                    result_type=list[str], start_to_close_timeout=timedelta(seconds=30), retry_policy=ACTION_RETRY)
            if input.metrics and workflow.patched("canary-await-scraped"):
                # Prometheus passes new file_sd targets on every ~5 s: a step analysed before its mesh is scraped
                # sees no data (a pause at the first step, or a faulty node that `or vector(0)` reads as healthy).
                await workflow.execute_activity(
                    "await_scraped", ScrapeReadyInput(selectors={"mesh": self._mesh.labels},
                                                      targets={"mesh": len(self._mesh.nodes)}),
                    result_type=ScrapeReadyResult, start_to_close_timeout=timedelta(minutes=3),
                    heartbeat_timeout=timedelta(seconds=30), retry_policy=ACTION_RETRY)
        assert self._target is not None
        if not self._target.nodes and input.replicas:  # Kubernetes: steps count replicas of the Deployment
            name = self._target.name or input.name
            self._target = self._target.model_copy(update={"nodes": [
                NodeRef(id=f"{name}-{i}", address=f"{name}-{i}") for i in range(input.replicas)]})
        try:
            self._plan = plan_steps([n.id for n in self._target.nodes], input.steps, seed=input.name)
        except ValueError as err:
            raise ApplicationError(f"canary {input.name}: {err}", type=INVALID_INPUT, non_retryable=True) from err
        await self._audit("canary.start", {"version": input.version, "steps": [s.label for s in self._plan],
                                           "nodes": len(self._plan[-1].nodes), "evidence_hash": input.evidence_hash})
        while self._step + 1 < len(self._plan):  # a full promote shortens the plan while it runs
            step = self._plan[self._step + 1]
            self._step = step.index
            self._to(RolloutPhase.PAUSED if self._paused else RolloutPhase.STEPPING, f"step {step.label}")
            await workflow.wait_condition(lambda: not self._paused or self._abort)
            if self._abort:
                return await self._rollback("aborted by an operator", RolloutPhase.ABORTED)
            try:
                await self._apply_step(step)
            except StepDenied as denied:
                await self._audit("canary.denied", {"step": step.label, "reason": str(denied)})
                return await self._rollback(str(denied), RolloutPhase.ROLLED_BACK)
            outcome = await self._bake(step)
            if outcome is not None:
                return outcome
        self._to(RolloutPhase.PROMOTED, "promoted")
        await self._audit("canary.promoted", {"version": input.version, "nodes": len(self._plan[-1].nodes)})
        await self._release_mesh()
        return self._result(RolloutPhase.PROMOTED, [f"{input.version} on every node ({len(self._plan[-1].nodes)})"])

    async def _apply_step(self, step: PlannedStep) -> None:
        assert self._target is not None
        result = await self._act(MeshActionInput(
            target=self._target, action=MeshAction.SET_VERSION, node_ids=step.added, version=self._in.version,
            config=self._in.config, action_id=keys.canary_step_action(self._in.name, step.index)))
        known = {n.id: n.version for n in self._target.nodes}
        for node in step.added:
            before = result.previous.get(node) or known.get(node) or self._in.mesh_version
            self._previous.setdefault(node, before)
        self._on_new = len(step.nodes)
        now = workflow.now()
        self._status_times["step_applied_at"] = now
        self._history.append(StepRecord(index=step.index, label=step.label, nodes=len(step.nodes), applied_at=now))
        await self._audit("canary.step", {"step": step.label, "index": step.index, "added": step.added,
                                          "nodes_on_version": len(step.nodes), "version": self._in.version})

    async def _bake(self, step: PlannedStep) -> CanaryResult | None:
        """Analyse every interval until the bake is done (advance), a metric fails (roll back) or an operator
        acts. Returns a final result, or None to go on with the next step."""
        self._to(RolloutPhase.BAKING, f"baking step {step.label}")
        started = workflow.now()
        rows: list[list[Measurement]] = []
        wait = self._in.bake_time > timedelta(0)  # no bake: one analysis right away, no timer
        while True:
            breach: StepAnalysis | None = None
            if wait and not rows and self._in.metrics and workflow.patched(WATCH_PATCH):
                breach = await self._watch(step)  # the step just went live: watch its first interval closely
            elif wait:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._abort or self._promote is not None,
                                                  timeout=self._in.analysis_interval)
            wait = True
            if self._abort:
                return await self._rollback("aborted by an operator", RolloutPhase.ABORTED)
            if self._promote is not None:
                return await self._promoted(step)
            if breach is not None:
                analysis = breach
            else:
                if self._in.metrics:
                    rows.append(await self._measure(step))
                analysis = analyse_step(self._in.metrics, rows,
                                        bake_done=workflow.now() - started >= self._in.bake_time)
            self._history[-1].decision, self._history[-1].reasons = analysis.decision.value, analysis.reasons
            if analysis.decision is Decision.ROLLBACK:
                self._status_times["breach_at"] = workflow.now()
                return await self._rollback("; ".join(analysis.reasons), RolloutPhase.ROLLED_BACK)
            if analysis.decision is Decision.PAUSE and not self._paused:
                self._paused, self._pause_reason = True, analysis.reasons[0]
                self._to(RolloutPhase.PAUSED, f"paused at step {step.label}")
                await self._audit("canary.paused", {"step": step.label, "reason": self._pause_reason})
                await workflow.wait_condition(lambda: not self._paused or self._abort or self._promote is not None)
                if not self._abort and self._promote is None:
                    return None  # resumed by an operator: the inconclusive step is accepted
                continue
            if analysis.decision is Decision.ADVANCE:
                if self._paused:
                    self._to(RolloutPhase.PAUSED, f"paused after step {step.label}")
                    await workflow.wait_condition(lambda: not self._paused or self._abort or self._promote is not None)
                    if self._abort or self._promote is not None:
                        continue
                return None

    async def _watch(self, step: PlannedStep) -> StepAnalysis | None:
        """Wait the step's first analysis interval while the ``watch_metrics`` activity evaluates it after each
        fresh scrape of its canary nodes (at most ``WatchInput.max_samples`` of them): a breach the spec's tolerance
        confirms (``failure_limit + 1`` failing samples in a row) ends the wait at once and is returned; else None
        at the tick (or on an operator's signal), and the step is analysed as before. A faulty build shows itself
        when it goes live, which is when this watch runs; later in the bake the ticks analyse as they always did
        (a watch holds real time, which a time-skipped bake could not skip). The watch only adds earlier
        rollbacks: if it fails, the tick still comes."""
        deadline = workflow.now() + self._in.analysis_interval
        watch: workflow.ActivityHandle[WatchResult] | None = workflow.start_activity(
            "watch_metrics", self._watch_input(step), result_type=WatchResult,
            start_to_close_timeout=self._in.analysis_interval + timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=1))
        try:
            while (remaining := deadline - workflow.now()) > timedelta(0):
                try:
                    await workflow.wait_condition(self._woken(watch), timeout=remaining)
                except TimeoutError:
                    return None
                if self._abort or self._promote is not None or watch is None:
                    return None
                done, watch = watch, None
                try:
                    result = done.result()
                except ActivityError as err:  # the watch is an early warning only; the tick measures anyway
                    workflow.logger.warning("canary %s: watching step %s failed: %s", self._in.name, step.label, err)
                    continue
                rows = [sample.measurements for sample in result.samples]
                if result.breach and (breach := confirmed_breach(self._in.metrics, rows)) is not None:
                    self._measurements = rows[-1]
                    return breach
            return None
        finally:
            if watch is not None and not watch.done():
                watch.cancel()  # the tick came first: its outcome (cancelled) is of no interest
                watch.add_done_callback(_ignore_outcome)

    def _woken(self, watch: workflow.ActivityHandle[WatchResult] | None) -> Callable[[], bool]:
        return lambda: self._abort or self._promote is not None or (watch is not None and watch.done())

    def _watch_input(self, step: PlannedStep) -> WatchInput:
        assert self._target is not None
        queries = self._queries(step)
        if self._in.canary_labels is not None:
            targets = expand(TARGETS_QUERY, self._in.canary_labels)
        else:
            targets = group_query(TARGETS_QUERY, self._labels, self._in.node_label, step.nodes)
        return WatchInput(metrics=self._in.metrics, queries=queries, targets=targets,
                          reference=dict(self._reference), span=self._in.analysis_interval)

    async def _promoted(self, step: PlannedStep) -> CanaryResult | None:
        request, self._promote = self._promote, None
        assert request is not None
        await self._audit("canary.promote", {"step": step.label, "full": request.full})
        if request.full and step.index < len(self._plan) - 1:
            last = self._plan[-1]
            rest = PlannedStep(index=step.index + 1, label=last.label, nodes=last.nodes,
                               added=[n for n in last.nodes if n not in step.nodes])
            self._plan = [*self._plan[: step.index + 1], rest]
        return None

    def _stable(self, step: PlannedStep) -> list[str]:
        assert self._target is not None
        return [n.id for n in self._target.nodes if n.id not in set(step.nodes)]

    def _queries(self, step: PlannedStep) -> list[MetricQuery]:
        """Per metric: ``<name>.canary`` over the step's nodes and, while there are any, ``<name>.stable``."""
        canary, stable = step.nodes, self._stable(step)
        queries = []
        for m in self._in.metrics:
            if self._in.canary_labels is not None and self._in.stable_labels is not None:
                queries.append(MetricQuery(name=f"{m.name}.canary", promql=expand(m.query, self._in.canary_labels)))
                if stable:
                    queries.append(MetricQuery(name=f"{m.name}.stable", promql=expand(m.query, self._in.stable_labels)))
                continue
            queries.append(MetricQuery(name=f"{m.name}.canary",
                                       promql=group_query(m.query, self._labels, self._in.node_label, canary)))
            if stable:
                queries.append(MetricQuery(name=f"{m.name}.stable",
                                           promql=group_query(m.query, self._labels, self._in.node_label, stable)))
        return queries

    async def _measure(self, step: PlannedStep) -> list[Measurement]:
        stable = self._stable(step)
        queries = self._queries(step)
        result = await workflow.execute_activity(
            "query_metrics", InstantQueryInput(queries=queries, selectors={"group": {}}),
            result_type=InstantQueryResult, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUERY_RETRY)
        row = []
        for m in self._in.metrics:
            value = result.values.get(f"{m.name}.canary", {}).get("group")
            if stable:
                self._reference[m.name] = result.values.get(f"{m.name}.stable", {}).get("group")
            row.append(measure(m, value, self._reference.get(m.name)))
        self._measurements = row
        return row

    async def _rollback(self, reason: str, outcome: RolloutPhase) -> CanaryResult:
        """Every node this rollout moved goes back to its own previous version."""
        assert self._target is not None
        self._status_times["rollback_started_at"] = workflow.now()
        self._on_new = 0
        self._to(RolloutPhase.ROLLING_BACK, "rolling back")
        await self._audit("canary.rollback", {"reason": reason, "nodes": sorted(self._previous)})
        by_version: dict[str, list[str]] = {}
        for node, version in sorted(self._previous.items()):
            by_version.setdefault(version, []).append(node)
        for version, nodes in sorted(by_version.items()):
            await self._act(MeshActionInput(
                target=self._target, action=MeshAction.SET_VERSION, node_ids=nodes, version=version,
                action_id=keys.canary_rollback_action(self._in.name, version)), checked=False)
        self._to(outcome, outcome.value)
        await self._audit(f"canary.{'aborted' if outcome is RolloutPhase.ABORTED else 'rolled_back'}",
                          {"reason": reason, "restored": by_version})
        await self._release_mesh()
        return self._result(outcome, [reason], rolled_back=sorted(self._previous))

    async def _claim_token(self, input: CanaryInput) -> None:
        """Before anything moves: the peer rule asked for is no looser than the policy, and the token is sealed for
        this rollout (the worker claims it for this run; it names the agent)."""
        where = f"canary {input.name}"
        try:
            await load_rule(where, threshold_nodes=input.peer_threshold_nodes, threshold_pct=input.peer_threshold_pct,
                            peers_required=input.peers_required, wait=input.peer_wait)
            if not sl.is_sealed(input.capability_token):
                raise not_sealed(where, "capability_token", input.capability_token or "")
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from None
        claim = await claim_token(where, input.capability_token or "", self._digest())
        if claim.agent_id != input.agent_id:
            raise ApplicationError(f"{where}: the sealed token belongs to agent {claim.agent_id!r}, not "
                                   f"{input.agent_id!r}", type=INVALID_INPUT, non_retryable=True)
        self._sealed = True

    def _digest(self) -> str:
        return sl.input_digest(self._in, "capability_token")

    @staticmethod
    def _binding(workflow_id: str, request: AgentActionInput) -> sl.Binding:
        return sl.Binding(workflow_type="AgentActionWorkflow", workflow_id=workflow_id,
                          input_digest=sl.input_digest(request, "token"))

    async def _act(self, action: MeshActionInput, *, checked: bool = True) -> MeshActionResult:
        """The one place the rollout changes the mesh: as the input's agent, through ``AgentActionWorkflow``, when
        a capability token is given and the change is a step (``checked``); else directly."""
        agent, token = self._in.agent_id, self._in.capability_token
        if checked and agent is not None and token is not None:
            request = AgentActionInput.for_mesh_action(
                agent, token, action, peers_required=self._in.peers_required, peer_wait=self._in.peer_wait,
                peer_threshold_nodes=self._in.peer_threshold_nodes, peer_threshold_pct=self._in.peer_threshold_pct,
                execute_timeout=self._in.action_timeout)
            child_id = keys.agent_action_id(agent, request.action_id)
            if self._sealed:  # the worker re-seals the token for this step's action only
                request = request.model_copy(update={"token": await workflow.execute_activity(
                    "reseal_token", ResealInput(token=token, input_digest=self._digest(),
                                                child=self._binding(child_id, request)),
                    result_type=str, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUERY_RETRY)})
            decided: AgentActionResult = await workflow.execute_child_workflow(
                "AgentActionWorkflow", request, id=child_id, result_type=AgentActionResult)
            if not decided.allowed:
                raise StepDenied(f"agent {agent} was refused the step on {len(action.node_ids)} node(s) "
                                 f"[{decided.caveat}]: {decided.reason}")
            return decided.to_mesh_result(action.action_id)
        result: MeshActionResult = await workflow.execute_activity(
            "execute_mesh_action", action, result_type=MeshActionResult,
            start_to_close_timeout=self._in.action_timeout, retry_policy=ACTION_RETRY)
        return result

    async def _release_mesh(self) -> None:
        if self._mesh is not None and not self._in.keep_mesh:
            mesh, self._mesh = self._mesh, None
            await workflow.execute_activity("teardown_sandbox", mesh, start_to_close_timeout=timedelta(minutes=2),
                                            retry_policy=ACTION_RETRY)
            if self._registered and workflow.patched("canary-deregister-mesh"):
                # What this rollout registered goes with its mesh: the registry's live count (the denominator of
                # every network share) must not grow with each rollout that ever ran.
                registered, self._registered = self._registered, []
                await workflow.execute_activity(
                    "deregister_nodes", RegisterNodesInput(node_ids=registered), result_type=list[str],
                    start_to_close_timeout=timedelta(seconds=30), retry_policy=ACTION_RETRY)

    async def _audit(self, kind: str, payload: dict[str, Any]) -> None:
        await append_audit(kind, self._in.name, payload)

    def _to(self, phase: RolloutPhase, step: str) -> None:
        self._phase = phase
        set_step(f"canary: {step}", EXPERIMENT_NAME.value_set(self._in.name))

    def _result(self, outcome: RolloutPhase, reasons: list[str], rolled_back: list[str] | None = None) -> CanaryResult:
        self._reasons = reasons
        return CanaryResult(name=self._in.name, outcome=outcome, version=self._in.version,
                            steps_done=len(self._history), reasons=reasons, rolled_back_nodes=rolled_back or [],
                            status=self.status())

    @workflow.signal
    def pause(self) -> None:
        self._paused, self._pause_reason = True, "paused by an operator"

    @workflow.signal
    def resume(self) -> None:
        self._paused, self._pause_reason = False, ""

    @workflow.signal
    def promote(self, request: PromoteRequest) -> None:
        self._promote, self._paused = request, False

    @workflow.signal
    def abort(self) -> None:
        self._abort = True

    @workflow.query
    def status(self) -> CanaryStatus:
        return CanaryStatus(
            name=self._in.name, phase=self._phase, version=self._in.version, step=self._step, steps=self._plan,
            on_new_version=self._on_new,
            total_nodes=len(self._plan[-1].nodes) if self._plan else 0, paused=self._paused,
            pause_reason=self._pause_reason, analysis_interval=self._in.analysis_interval,
            last_measurements=self._measurements, history=self._history, reasons=self._reasons,
            nodes=self._target.nodes if self._target else [],
            **self._status_times,
        )


