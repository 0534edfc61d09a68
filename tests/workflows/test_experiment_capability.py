"""An experiment whose spec names a rollout agent and a peer policy: once approved, every canary step runs as that
agent's capability-bounded action (a child AgentActionWorkflow) under the spec's policy, and a wide step runs only
after k peers signed it — the network policy's k (3), never fewer (real Temporal, real mesh-node processes and
Prometheus, the real capability store on SQLite). The bakes are seconds long and run in real time: time skipping
would also skip the wide step's wait for its peers."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from tests.workflows.capabilities_support import network, sealed_experiment
from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import RELAY_ERRORS, settings_overrides, spec, unique
from tests.workflows.test_experiment import start
from westworld import capability as cap
from westworld import peers
from westworld.agents import AgentActionResult
from westworld.experiment_run import ExperimentInput
from westworld.keys import canary_id, canary_step_workflow_id
from westworld.rollout import CanaryResult, RolloutPhase
from workflows.agent_action import AgentActionWorkflow
from workflows.canary import CanaryRolloutWorkflow

__all__ = ["settings_overrides"]
AGENT = "cradle-bot"
T = TypeVar("T")


async def test_an_approved_rollout_runs_as_the_specs_agent_under_its_peer_policy(harness: Harness) -> None:
    net = await network(harness, 200, peers_n=3, guardians_n=0)  # three registered peers with Ed25519 keys
    token = cap.attenuate(await net.store.mint(AGENT, ["set_version"]), ["affects_nodes_le = 3"])
    name = unique("agent")
    # 4 nodes in 2 steps: 1 node, then 3 more. The spec asks stricter than the policy: wide from 3 nodes (the
    # policy: 21), or more than 1% of the 204 registered nodes (the policy's share): step 1 only.
    rollout = {"target": {"mesh_nodes": 4, "mesh_version": "1.4.0"}, "steps": [1, 4], "bake_time": "4s",
               "analysis_interval": "2s", "agent": AGENT,
               "peer_policy": {"threshold": 3, "wide_nodes": 2, "wait": "30m"}}
    handle = await start(harness, await sealed_experiment(harness, ExperimentInput(
        spec=spec(name, "1.4.0", rollout=rollout, chaos=[], metrics=[RELAY_ERRORS.model_dump(mode="json")]),
        rollout_capability_token=token)))
    canary: WorkflowHandle[CanaryRolloutWorkflow, CanaryResult] = harness.client.get_workflow_handle_for(
        CanaryRolloutWorkflow.run, canary_id(name))
    wide: WorkflowHandle[Any, AgentActionResult] = harness.client.get_workflow_handle(
        canary_step_workflow_id(AGENT, name, 1), result_type=AgentActionResult)
    waiting = await eventually(lambda: _started(wide.query(AgentActionWorkflow.status)),
                               lambda s: s is not None and s.step == "awaiting peer signatures", timeout=120)
    assert waiting is not None
    assert waiting.wide and waiting.peers_required == 3  # the network policy's k (a spec may ask more, never less)
    assert (await canary.query(CanaryRolloutWorkflow.status)).on_new_version == 1  # not moved before the peers
    for signer, key in sorted(net.peer_keys.items()):
        await wide.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
            signer_id=signer, signature=peers.sign(key, bytes.fromhex(waiting.digest))))

    result = await handle.result()
    assert result.verdict == "pass" and result.rollout is not None
    assert result.rollout.outcome is RolloutPhase.PROMOTED and result.rollout.status.on_new_version == 4
    narrow = await harness.client.get_workflow_handle(
        canary_step_workflow_id(AGENT, name, 0), result_type=AgentActionResult).result()
    signed: AgentActionResult = await wide.result()
    assert (narrow.allowed, narrow.wide, narrow.executed, len(narrow.applied)) == (True, False, True, 1)
    assert (signed.allowed, signed.wide, signed.executed, len(signed.applied)) == (True, True, True, 3)
    assert signed.peers == sorted(net.peer_keys)
    allowed = {e.subject for e in await harness.resources.audit.latest(40) if e.kind == "capability.allowed"}
    assert {canary_step_workflow_id(AGENT, name, i) for i in (0, 1)} <= allowed


async def _started(query: Awaitable[T]) -> T | None:
    """A query's answer, or None while the workflow has not started."""
    try:
        return await query
    except RPCError:
        return None
