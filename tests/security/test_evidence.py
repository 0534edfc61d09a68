"""Evidence true to what ran, and runs that leave the network registry as they found it (docs/security.md).

Rule 1: a crash must not change an experiment's verdict. A fault that did not hold over the window its spec gives
it (a worker down over its apply or its clear) makes the run ``invalid``: not judged, not put to a vote, not rolled
out, and the evidence bundle shows each fault's specified and actual window. Tested by stopping the worker inside a
fault window on a real Temporal server and a real local mesh, and starting a new one later on the same queue.

Rule 2: what a run registers, it deregisters. A canary that provisions its own mesh registers its nodes for the
capability checks and removes them with the mesh, so repeated demos on one data dir leave the live node count (what
``affects_network_pct_le``, the peer policy and the anomaly watch divide by) as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from activities.sql.capability_store import CapabilityStore
from tests.workflows import capabilities_support
from tests.workflows.conftest import Harness, eventually, record_histories
from tests.workflows.experiments_support import DELIVERY, RELAY_ERRORS, node_versions, settings_overrides, spec, unique
from westworld import capability as cap
from westworld.experiment_run import ExperimentInput, ExperimentResult, ExperimentStatus
from westworld.keys import canary_id
from westworld.rollout import CanaryInput, CanaryResult, RolloutPhase
from workers.metrics import Metrics
from workers.worker import build_worker
from workflows.canary import CanaryRolloutWorkflow
from workflows.experiment import ExperimentWorkflow

__all__ = ["settings_overrides"]
Handle = WorkflowHandle[ExperimentWorkflow, ExperimentResult]


async def _run(worker: Worker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    """Stop the worker as a crash would, mid-run: its in-flight activities are cancelled, its cache is lost."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class TestAFaultThatDidNotRunAsSpecifiedIsNeverJudged:
    async def test_a_worker_stopped_inside_a_fault_window_makes_the_run_invalid(self, harness: Harness) -> None:
        name, queue = unique("crash"), f"crash-{uuid.uuid4()}"
        fault = {"kind": "latency", "start": "3s", "duration": "4s", "nodes": [0], "latency_ms": 5}
        inp = ExperimentInput(spec=spec(name, "1.4.0", duration="14s", vote=True, chaos=[fault],
                                        rollout={"target": {"mesh_nodes": 2}, "steps": ["100%"]}),
                              live_update=timedelta(seconds=2), heartbeat_timeout=timedelta(seconds=3))
        first = await _run(build_worker(harness.client, harness.resources, queue, Metrics()))
        handle: Handle = await harness.client.start_workflow(ExperimentWorkflow.run, inp, id=f"experiment:{name}",
                                                             task_queue=queue)
        applied = await eventually(lambda: handle.query(ExperimentWorkflow.status),
                                   lambda s: sum(e.action == "applied" for e in s.chaos) == 2, timeout=90)
        nodes = [n for ref in applied.sandboxes for n in ref.nodes]
        await _stop(first)  # inside the fault's window (3 s - 7 s): its clear is due while no worker runs
        await asyncio.sleep(8)
        second = await _run(build_worker(harness.client, harness.resources, queue, Metrics()))
        try:
            result = await asyncio.wait_for(handle.result(), timeout=120)
            st: ExperimentStatus = await handle.query(ExperimentWorkflow.status)
            if os.environ.get("WESTWORLD_RECORD_HISTORIES"):
                await asyncio.sleep(1)
                await record_histories(dataclasses.replace(harness, task_queue=queue), "test_a_worker_stopped_"
                                       "inside_a_fault_window_makes_the_run_invalid")
        finally:
            await _stop(second)
        assert result.verdict == "invalid" and result.score == 0
        assert result.vote_decision is None and result.rollout is None and st.vote_workflow_id is None
        assert any("fault 0 (latency)" in r and "cleared" in r and "late" in r for r in result.reasons), result.reasons
        late = [f for f in st.faults if not f.as_specified]
        assert late and all(f.cleared_s is not None and f.cleared_s > f.specified_end_s + f.slack_s for f in late)
        assert result.evidence is not None
        bundle = json.loads(Path(result.evidence.path, "bundle.json").read_text())
        assert bundle["judgement"]["verdict"] == "invalid" and bundle["judgement"]["metrics"] == []
        assert {f["arm"] for f in bundle["faults"]} == {"baseline", "treatment"}
        assert not all(f["as_specified"] for f in bundle["faults"])
        entry = next(e for e in reversed(await harness.resources.audit.latest(30))
                     if e.subject == name and e.kind == "experiment.verdict")
        assert entry.payload["verdict"] == "invalid" and entry.payload["evidence_hash"] == result.evidence.hash
        assert set((await node_versions(nodes)).values()) == {None}  # torn down all the same


async def _rollout_over_its_own_mesh(h: Harness, store: CapabilityStore, fail: bool) -> CanaryResult:
    """What the experiments demo's rollouts do: an agent's canary over a mesh it provisions (and registers)."""
    token = cap.attenuate(await store.mint("repeat-bot", ["set_version"]), ["affects_nodes_le = 3"])
    inp = CanaryInput(name=unique("repeat"), version="1.5.0-rc1" if fail else "1.4.0", mesh_nodes=3,
                      mesh_version="1.4.0", steps=[1, 3], bake_time=timedelta(seconds=4),
                      analysis_interval=timedelta(seconds=2), metrics=[RELAY_ERRORS] if fail else [],
                      agent_id="repeat-bot", capability_token=token)
    seal = getattr(capabilities_support, "sealed_canary", None)  # tokens travel sealed where the worker wants them
    if seal is not None:
        inp = await seal(h, inp)
    before = len(await store.node_regions())
    handle = await h.client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                           task_queue=h.task_queue)
    await eventually(store.node_regions, lambda r: len(r) == before + 3  # counted while its mesh runs
                     and sum(n.startswith(f"{inp.name}-mesh-") for n in r) == 3, timeout=60)
    return await asyncio.wait_for(handle.result(), timeout=120)


class TestARunLeavesTheRegistryAsItFoundIt:
    async def test_repeated_rollouts_over_their_own_mesh_leave_the_live_count_unchanged(
            self, harness: Harness) -> None:
        net = await capabilities_support.network(harness, 200, peers_n=0, guardians_n=0)  # a step is narrow
        before = await net.store.node_regions()
        for _ in range(2):  # the demo's approved rollout (promoted) and its override (rolled back), twice
            promoted = await _rollout_over_its_own_mesh(harness, net.store, fail=False)
            assert promoted.outcome is RolloutPhase.PROMOTED, promoted.reasons
            assert await net.store.node_regions() == before
            rolled_back = await _rollout_over_its_own_mesh(harness, net.store, fail=True)
            assert rolled_back.outcome is RolloutPhase.ROLLED_BACK, rolled_back.reasons
            assert await net.store.node_regions() == before
        assert set((await node_versions(promoted.status.nodes + rolled_back.status.nodes)).values()) == {None}

    async def test_only_what_the_run_added_is_deregistered(self, harness: Harness) -> None:
        """A node registered before the run (here under the id the mesh will take) is not the run's to remove."""
        net = await capabilities_support.network(harness, 200, peers_n=0, guardians_n=0)
        name = unique("owned")
        await net.store.add_node(f"{name}-mesh-n0", "eu-west", None, datetime.now(UTC))
        token = await net.store.mint("repeat-bot", ["set_version"])
        inp = CanaryInput(name=name, version="1.4.0", mesh_nodes=2, mesh_version="1.4.0", steps=[2],
                          bake_time=timedelta(0), agent_id="repeat-bot", capability_token=token)
        seal = getattr(capabilities_support, "sealed_canary", None)
        if seal is not None:
            inp = await seal(harness, inp)
        result = await (await harness.client.start_workflow(
            CanaryRolloutWorkflow.run, inp, id=canary_id(name), task_queue=harness.task_queue)).result()
        assert result.outcome is RolloutPhase.PROMOTED
        regions = await net.store.node_regions()
        assert regions.get(f"{name}-mesh-n0") == "eu-west" and f"{name}-mesh-n1" not in regions


class TestACanaryIsJudgedOnlyOnWhatWasMeasured:
    async def test_a_rollout_over_its_own_mesh_waits_until_every_node_is_scraped(self, harness: Harness) -> None:
        """Prometheus hands new scrape targets over every ~5 s: a step analysed sooner saw no data for its canary
        (the demo's pause at 1 % with "delivery_ratio: no data", or a faulty node read as healthy)."""
        inp = CanaryInput(name=unique("scraped"), version="1.4.0", mesh_nodes=3, mesh_version="1.4.0", steps=[1, 3],
                          bake_time=timedelta(0), metrics=[DELIVERY])  # each step analysed once, right away
        handle = await harness.client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                                     task_queue=harness.task_queue)
        settled = await eventually(lambda: handle.query(CanaryRolloutWorkflow.status), lambda st: st.phase in {
            RolloutPhase.PROMOTED, RolloutPhase.PAUSED, RolloutPhase.ROLLED_BACK}, timeout=120)
        if settled.phase is not RolloutPhase.PROMOTED:
            await handle.signal(CanaryRolloutWorkflow.abort)  # a paused rollout waits for an operator: end it
        assert settled.phase is RolloutPhase.PROMOTED, (settled.pause_reason, settled.last_measurements)
        assert [r.decision for r in settled.history] == ["advance", "advance"]
        assert all(m.canary is not None for m in settled.last_measurements)
        await handle.result()
