"""A canary whose steps are capability-bounded agent actions: each step runs as a child AgentActionWorkflow under
the rollout agent's token; a step the token does not allow is refused with its caveat named and the rollout rolls
back what it moved (real Temporal, real mesh-node processes, the real capability store on SQLite). The token is
sealed for the rollout; the peer rule is the network policy's (a one-node step of a 200-node network is narrow)."""

from __future__ import annotations

from datetime import timedelta

from tests.workflows.capabilities_support import network, sealed_canary
from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import node_versions, settings_overrides, unique
from tests.workflows.test_canary import _teardown, phase_is, start
from westworld import capability as cap
from westworld.keys import agent_action_id, canary_step_workflow_id
from westworld.rollout import CanaryInput, RolloutPhase
from workflows.canary import CanaryRolloutWorkflow

__all__ = ["settings_overrides"]


async def test_a_step_beyond_the_token_is_refused_and_the_rollout_rolls_back(harness: Harness) -> None:
    net = await network(harness, 200, peers_n=0, guardians_n=0)
    token = cap.attenuate(await net.store.mint("canary-bot", ["set_version"]), ["affects_nodes_le = 1"])
    inp = await sealed_canary(harness, CanaryInput(
        name=unique("bounded"), version="1.4.0", mesh_nodes=4, mesh_version="1.3.0", steps=[1, 4], keep_mesh=True,
        agent_id="canary-bot", capability_token=token))
    handle = await start(harness, inp)
    baking = await phase_is(handle, RolloutPhase.BAKING)
    assert baking.on_new_version == 1  # the first step (one node) was allowed and executed by the agent action
    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    result = await handle.result()
    st = result.status
    try:
        assert result.outcome is RolloutPhase.ROLLED_BACK
        assert "[affects_nodes_le = 1]" in result.reasons[0] and "touches 3 nodes, more than 1" in result.reasons[0]
        assert set((await node_versions(st.nodes)).values()) == {"1.3.0"}  # the moved node runs 1.3.0 again
        entries = await harness.resources.audit.latest(30)
        decisions = [(e.kind, e.subject) for e in entries if e.subject.startswith(agent_action_id("canary-bot", ""))]
        assert ("capability.allowed", canary_step_workflow_id("canary-bot", inp.name, 0)) in decisions
        assert ("capability.denied", canary_step_workflow_id("canary-bot", inp.name, 1)) in decisions
        assert "canary.denied" in [e.kind for e in entries if e.subject == inp.name]
    finally:
        await _teardown(harness, st)


async def test_without_a_registered_target_the_agent_is_refused(harness: Harness) -> None:
    """A rollout over listed nodes nobody registered: the agent may not touch them, and nothing changes."""
    net = await network(harness, 0, peers_n=0, guardians_n=0)
    token = await net.store.mint("canary-bot", ["set_version"])
    first = CanaryInput(name=unique("mesh"), version="1.3.0", mesh_nodes=2, mesh_version="1.3.0", steps=[2],
                        bake_time=timedelta(0), keep_mesh=True)
    made = await (await start(harness, first)).result()  # a plain rollout just to have running nodes
    try:
        from westworld.sandbox import Backend, MeshTarget

        inp = await sealed_canary(harness, CanaryInput(
            name=unique("unregistered"), version="1.4.0", steps=[1, 2],
            target=MeshTarget(backend=Backend.LOCAL, nodes=made.status.nodes), agent_id="canary-bot",
            capability_token=token))
        handle = await start(harness, inp)
        result = await eventually(handle.result, lambda r: r is not None, timeout=60)
        assert result.outcome is RolloutPhase.ROLLED_BACK and "not registered" in result.reasons[0]
        assert set((await node_versions(made.status.nodes)).values()) == {"1.3.0"}
        assert (await handle.query(CanaryRolloutWorkflow.status)).on_new_version == 0
    finally:
        await _teardown(harness, made.status)
