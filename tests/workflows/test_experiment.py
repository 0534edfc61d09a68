"""ExperimentWorkflow on a real Temporal server: real mesh-node sandboxes scraped by a real Prometheus, real
evidence files, a real child DaoVoteWorkflow (signed ballots on anvil) and a real canary; the 72 h vote window is
closed early by the votes and the canary's 10 min bakes are time-skipped. The runs themselves are seconds long."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import RELAY_ERRORS, node_versions, settings_overrides, spec, unique
from tests.workflows.test_dao_vote import vote
from westworld.experiment_run import ExperimentInput, ExperimentResult, ExperimentStatus, Phase
from westworld.keys import canary_id, experiment_id
from westworld.rollout import CanaryResult, RolloutPhase
from westworld.sandbox import NodeRef, SandboxRef
from westworld.vote import DaoVoteResult
from workers.cli.stuck import find_stuck
from workflows.canary import CanaryRolloutWorkflow
from workflows.dao_vote import DaoVoteWorkflow
from workflows.experiment import ExperimentWorkflow

__all__ = ["settings_overrides"]
Handle = WorkflowHandle[ExperimentWorkflow, ExperimentResult]


async def start(h: Harness, inp: ExperimentInput) -> Handle:
    assert inp.spec is not None
    return await h.skipper.client.start_workflow(
        ExperimentWorkflow.run, inp, id=experiment_id(inp.spec['metadata']['name']), task_queue=h.task_queue)


async def status_when(handle: Handle, check: object, timeout: float = 60) -> ExperimentStatus:
    return await eventually(lambda: handle.query(ExperimentWorkflow.status), check, timeout=timeout)  # type: ignore[arg-type]


async def provisioned(h: Harness, handle: Handle) -> list[SandboxRef]:
    """The SandboxRefs provision_sandbox returned, decoded from the workflow's (encrypted) history."""
    refs = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_completed_event_attributes"):
            payloads = event.activity_task_completed_event_attributes.result.payloads
            with contextlib.suppress(Exception):  # other activities' results are not SandboxRefs
                refs.append((await h.client.data_converter.decode(payloads, [SandboxRef]))[0])
    return [r for r in refs if isinstance(r, SandboxRef)]


async def running_nodes(handle: Handle, *, check_alive: bool = True) -> list[NodeRef]:
    """The nodes of both sandboxes once provisioned (provision_sandbox returns only when every node answers)."""
    st = await status_when(handle, lambda s: len(s.sandboxes) == 2, timeout=60)
    nodes = [n for ref in st.sandboxes for n in ref.nodes]
    assert len(nodes) == 6
    if check_alive:
        assert None not in (await node_versions(nodes)).values()
    return nodes


async def test_good_version_passes_is_voted_and_rolled_out(harness: Harness) -> None:
    name = unique("good")
    rollout = {"target": {"mesh_nodes": 4, "mesh_version": "1.4.0"}, "steps": ["25%", "100%"],
               "bake_time": "10m", "analysis_interval": "1m", "metrics": ["relay_errors"]}
    handle = await start(harness, ExperimentInput(spec=spec(name, "1.4.0", vote=True, rollout=rollout),
                                                  live_update=timedelta(seconds=2)))
    nodes = await running_nodes(handle)
    live = await status_when(handle, lambda s: s.live and 0 < s.progress < 1)
    assert set(live.live["relay_errors"]) == {"baseline", "treatment"}
    voting = await status_when(handle, lambda s: s.phase is Phase.VOTING, timeout=90)
    assert voting.verdict == "pass" and voting.evidence is not None and voting.vote_workflow_id
    assert set((await node_versions(nodes)).values()) == {None}  # both sandboxes torn down before the vote
    ev = Path(voting.evidence.path)
    assert {"bundle.json", "relay_errors.png", "delivery_ratio.png"} <= set(voting.evidence.files)
    assert (ev / "relay_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = json.loads((ev / "bundle.json").read_text())
    assert [e["action"] for e in bundle["chaos_timeline"]].count("applied") == 2  # one fault, both arms
    vote_handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = harness.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, voting.vote_workflow_id)
    await eventually(lambda: vote_handle.query(DaoVoteWorkflow.ballot_context), lambda c: c is not None)
    await vote(vote_handle, harness.voters[30], "for")
    await vote(vote_handle, harness.voters[0], "against")
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=72, minutes=1))  # the 72 h window, skipped
    canary: WorkflowHandle[CanaryRolloutWorkflow, CanaryResult] = harness.client.get_workflow_handle_for(
        CanaryRolloutWorkflow.run, canary_id(name))
    await status_when(handle, lambda s: s.phase is Phase.ROLLING_OUT)
    await eventually(lambda: canary.query(CanaryRolloutWorkflow.status), lambda s: s.phase.value == "baking")
    await harness.skipper.fast_forward(canary, timedelta(minutes=25))
    result = await handle.result()
    assert (result.verdict, result.vote_decision) == ("pass", "approved")
    assert result.rollout is not None and result.rollout.outcome is RolloutPhase.PROMOTED
    assert result.rollout.status.on_new_version == 4
    entries = {e.kind: e for e in await harness.resources.audit.latest(30) if e.subject == name}
    assert entries["experiment.verdict"].payload["evidence_hash"] == voting.evidence.hash
    assert "canary.promoted" in entries
    voted = await vote_handle.result()
    assert voted.proposal_id == f"{name}-{voting.evidence.hash[:8]}" and voted.votes == 2


async def test_faulty_version_fails_the_judge_and_is_not_voted(harness: Harness) -> None:
    name = unique("faulty")
    handle = await start(harness, ExperimentInput(spec=spec(name, "1.5.0-rc1", vote=True, chaos=[]),
                                                  live_update=timedelta(seconds=3)))
    result = await handle.result()
    assert result.verdict == "fail" and result.vote_decision is None and result.rollout is None
    assert any("relay_errors" in r for r in result.reasons), result.reasons
    assert result.evidence is not None and Path(result.evidence.path, "relay_errors.png").exists()
    st = await handle.query(ExperimentWorkflow.status)
    assert st.phase is Phase.DONE and st.sandboxes == [] and st.vote_workflow_id is None


async def test_teardown_when_a_step_fails(harness: Harness) -> None:
    name = unique("broken")
    broken = spec(name, "1.4.0", duration="30s", metrics=[
        {"name": "broken", "query": "sum(rate(mesh_relay_errors_total{selector}[5s])"}])  # Prometheus refuses it
    handle = await start(harness, ExperimentInput(spec=broken, live_update=timedelta(seconds=2)))
    with pytest.raises(WorkflowFailureError) as exc:
        await handle.result()
    # The first collection fails within a second of the run: the nodes are read from the workflow's history.
    nodes = [n for ref in await provisioned(harness, handle) for n in ref.nodes]
    assert len(nodes) == 6
    activity_error = exc.value.cause
    cause = activity_error.__cause__ if activity_error is not None else None
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput" and "broken" in cause.message
    assert set((await node_versions(nodes)).values()) == {None}
    st = await handle.query(ExperimentWorkflow.status)
    assert st.phase is Phase.TEARING_DOWN and st.sandboxes == []


async def test_abort_during_the_vote_cancels_it_and_rolls_nothing_out(harness: Harness) -> None:
    name = unique("abortvote")
    rollout = {"target": {"mesh_nodes": 2}, "steps": ["100%"], "bake_time": "1m", "analysis_interval": "1m"}
    only_errors = [RELAY_ERRORS.model_dump(mode="json")]  # always has a value: the verdict cannot lack samples
    handle = await start(harness, ExperimentInput(spec=spec(name, "1.4.0", vote=True, rollout=rollout,
                                                            chaos=[], metrics=only_errors)))
    voting = await status_when(handle, lambda s: s.phase is Phase.VOTING and s.vote_workflow_id, timeout=90)
    rows = await eventually(lambda: find_stuck(harness.settings, timedelta(0), client=harness.client),
                            lambda rs: any(r.workflow_id == handle.id for r in rs))
    assert next(r for r in rows if r.workflow_id == handle.id).step == "experiment: voting"  # `westworld stuck`
    await handle.signal(ExperimentWorkflow.abort)
    result = await handle.result()
    assert result.aborted and result.verdict == "pass" and result.rollout is None
    assert result.vote_decision == "cancelled (experiment aborted)"
    assert voting.vote_workflow_id is not None
    desc = await harness.client.get_workflow_handle(voting.vote_workflow_id).describe()
    assert desc.status is not None and desc.status.name == "CANCELED"
    approval = next(e for e in reversed(await harness.resources.audit.latest(20))
                    if e.subject == name and e.kind == "experiment.approval")
    assert approval.payload["approved"] is False


@pytest.mark.parametrize("how", ["cancel", "abort"])
async def test_teardown_on_cancellation_and_abort(harness: Harness, how: str) -> None:
    name = unique(how)
    handle = await start(harness, ExperimentInput(spec=spec(name, "1.4.0", duration="60s")))
    nodes = await running_nodes(handle)
    if how == "cancel":
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as exc:
            await handle.result()
        assert isinstance(exc.value.cause, CancelledError)
    else:
        await handle.signal(ExperimentWorkflow.abort)
        result = await handle.result()
        assert result.aborted and result.verdict is None
    assert set((await node_versions(nodes)).values()) == {None}
    assert not list(harness.settings.prometheus_targets_dir.glob(f"{name}-*.json"))


async def test_a_malformed_spec_fails_with_every_error(harness: Harness) -> None:
    bad = spec("bad-spec", "1.4.0", duration="5s",
               chaos=[{"kind": "latency", "start": "4s", "duration": "3s", "nodes": [7], "latency_ms": 5}])
    bad["spec"]["metrics"][1]["name"] = "relay_errors"
    handle = await start(harness, ExperimentInput(spec=bad))
    with pytest.raises(WorkflowFailureError) as exc:
        await handle.result()
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
    for expected in ("spec.chaos[0].duration: must end before spec.duration (5s)",
                     "spec.chaos[0].nodes[0]: node index 7 does not exist",
                     "spec.metrics[1].name: duplicate metric name 'relay_errors'"):
        assert expected in cause.message
