"""CanaryRolloutWorkflow on a real Temporal server with real mesh-node processes scraped by a real Prometheus.

Bake times are time-skipped where nothing needs real traffic; the faulty-version test runs in real time (a few
seconds), because the rollback must come from the canary's real relay errors reaching Prometheus.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowHandle

from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import RELAY_ERRORS, node_versions, settings_overrides, unique
from westworld.keys import canary_id, canary_mesh_id
from westworld.rollout import CanaryInput, CanaryResult, CanaryStatus, PromoteRequest, RolloutPhase
from workflows.canary import CanaryRolloutWorkflow

__all__ = ["settings_overrides"]
Handle = WorkflowHandle[CanaryRolloutWorkflow, CanaryResult]


async def start(h: Harness, inp: CanaryInput) -> Handle:
    return await h.skipper.client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                                 task_queue=h.task_queue)


async def phase_is(handle: Handle, *phases: RolloutPhase, timeout: float = 60) -> CanaryStatus:
    return await eventually(lambda: handle.query(CanaryRolloutWorkflow.status), lambda s: s.phase in phases,
                            timeout=timeout)


async def test_faulty_version_is_rolled_back_at_its_first_step(harness: Harness) -> None:
    inp = CanaryInput(name=unique("faulty"), version="1.5.0-rc1", mesh_nodes=4, mesh_version="1.4.0",
                      steps=["25%", "100%"], bake_time=timedelta(seconds=30), analysis_interval=timedelta(seconds=2),
                      metrics=[RELAY_ERRORS], keep_mesh=True)
    handle = await start(harness, inp)
    result = await handle.result()
    st = result.status
    try:
        assert result.outcome is RolloutPhase.ROLLED_BACK
        assert result.steps_done == 1 and len(result.rolled_back_nodes) == 1
        # Seen at an analysis tick, or (far likelier) by the watch right after the scrape that showed it.
        assert result.reasons[0].startswith("relay_errors=") and any(
            f"(1 failed measurement(s){how}; 0 tolerated)" in result.reasons[0]
            for how in ("", " in a row after fresh scrapes")), result.reasons
        assert st.step_applied_at and st.rollback_started_at and st.breach_at
        # Rolled back at the analysis that saw the breach, well before the step's 30 s bake was over (how soon the
        # breach is visible at all depends on the scrape and the rate window: the benchmark measures it).
        assert [(r.label, r.decision) for r in st.history] == [("25%", "rollback")]
        assert st.rollback_started_at - st.step_applied_at < inp.bake_time / 2
        versions = await node_versions(st.nodes)
        assert set(versions.values()) == {"1.4.0"}, versions  # the canary node runs its previous version again
        kinds = [e.kind for e in await harness.resources.audit.latest(10) if e.subject == inp.name]
        assert kinds == ["canary.start", "canary.step", "canary.rollback", "canary.rolled_back"]
    finally:
        await _teardown(harness, st)


async def test_a_breach_between_two_analyses_rolls_back_before_the_next_one(harness: Harness) -> None:
    """With a one-minute analysis interval the first tick is a minute away: only the watch of the fresh scrapes
    after the step went live can roll back the faulty build within seconds (it drops half the messages it relays
    here, so it shows within the watch's first samples)."""
    inp = CanaryInput(name=unique("watch"), version="1.5.0-rc1", config={"drop_rate": "0.5"}, mesh_nodes=4,
                      mesh_version="1.4.0",
                      steps=["25%", "100%"], bake_time=timedelta(minutes=5), analysis_interval=timedelta(minutes=1),
                      metrics=[RELAY_ERRORS])
    handle = await start(harness, inp)
    result = await handle.result()
    st = result.status
    assert result.outcome is RolloutPhase.ROLLED_BACK and st.step_applied_at and st.rollback_started_at
    assert st.rollback_started_at - st.step_applied_at < timedelta(seconds=30), st
    assert "(1 failed measurement(s) in a row after fresh scrapes; 0 tolerated)" in result.reasons[0]
    assert [(r.label, r.decision) for r in st.history] == [("25%", "rollback")]
    assert st.last_measurements and st.last_measurements[0].ok is False
    kinds = [e.kind for e in await harness.resources.audit.latest(10) if e.subject == inp.name]
    assert kinds == ["canary.start", "canary.step", "canary.rollback", "canary.rolled_back"]
    assert set((await node_versions(st.nodes)).values()) == {None}  # the provisioned mesh is gone


async def test_good_version_promoted_with_pause_resume_and_promote(harness: Harness) -> None:
    inp = CanaryInput(name=unique("good"), version="1.4.0", mesh_nodes=4, mesh_version="1.3.0",
                      steps=["25%", "50%", "100%"], metrics=[RELAY_ERRORS])  # real defaults: 10 min bake, 1 min
    handle = await start(harness, inp)
    baking = await phase_is(handle, RolloutPhase.BAKING)
    assert (baking.step, baking.on_new_version, baking.total_nodes) == (0, 1, 4)
    await handle.signal(CanaryRolloutWorkflow.pause)
    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    paused = await phase_is(handle, RolloutPhase.PAUSED)
    assert paused.step == 0 and paused.history[0].decision == "advance"  # baked and healthy, held by the pause
    await handle.signal(CanaryRolloutWorkflow.resume)
    second = await eventually(lambda: handle.query(CanaryRolloutWorkflow.status),
                              lambda s: s.step == 1 and s.phase is RolloutPhase.BAKING)
    assert second.on_new_version == 2
    await handle.signal(CanaryRolloutWorkflow.promote, PromoteRequest())  # skip this bake
    await eventually(lambda: handle.query(CanaryRolloutWorkflow.status), lambda s: s.step == 2)
    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    result = await handle.result()
    assert result.outcome is RolloutPhase.PROMOTED and result.steps_done == 3
    assert result.status.on_new_version == 4
    kinds = [e.kind for e in await harness.resources.audit.latest(20) if e.subject == inp.name]
    assert kinds[-1] == "canary.promoted" and kinds.count("canary.step") == 3 and "canary.promote" in kinds
    assert set((await node_versions(result.status.nodes)).values()) == {None}  # the provisioned mesh is gone


async def test_abort_rolls_back_every_moved_node(harness: Harness) -> None:
    inp = CanaryInput(name=unique("abort"), version="1.4.0", mesh_nodes=3, mesh_version="1.3.0",
                      steps=[1, 3], metrics=[RELAY_ERRORS], keep_mesh=True)
    handle = await start(harness, inp)
    await phase_is(handle, RolloutPhase.BAKING)
    await handle.signal(CanaryRolloutWorkflow.abort)
    result = await handle.result()
    try:
        assert result.outcome is RolloutPhase.ABORTED and len(result.rolled_back_nodes) == 1
        assert set((await node_versions(result.status.nodes)).values()) == {"1.3.0"}
    finally:
        await _teardown(harness, result.status)


async def _teardown(h: Harness, st: CanaryStatus) -> None:
    """Remove a mesh kept for inspection, with the project's own local backend."""
    import httpx

    from activities.sandbox.local import LocalSandbox
    from westworld.sandbox import Arm, Backend, SandboxRef

    async with httpx.AsyncClient(timeout=5.0) as http:
        backend = LocalSandbox(http, h.settings.data_dir, h.settings.prometheus_targets_dir, namespaces=False)
        await backend.teardown(SandboxRef(backend=Backend.LOCAL, sandbox_id=canary_mesh_id(st.name), arm=Arm.BASELINE,
                                          nodes=st.nodes))


async def test_full_promote_goes_straight_to_every_node(harness: Harness) -> None:
    inp = CanaryInput(name=unique("full"), version="1.4.0", mesh_nodes=4, mesh_version="1.3.0", steps=[1, 2, 3, 4])
    handle = await start(harness, inp)
    await phase_is(handle, RolloutPhase.BAKING)
    await handle.signal(CanaryRolloutWorkflow.promote, PromoteRequest(full=True))
    st = await eventually(lambda: handle.query(CanaryRolloutWorkflow.status), lambda s: s.on_new_version == 4)
    assert [s.label for s in st.steps] == ["1", "4"] and st.step == 1
    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    result = await handle.result()
    assert result.outcome is RolloutPhase.PROMOTED and [r.label for r in result.status.history] == ["1", "4"]
