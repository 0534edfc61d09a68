"""A creeping agent caught by AnomalyWatchWorkflow, the network halted (every check fails), then k guardians
resume it. Real Temporal server and SQLite; the watch polls the decision feed every second."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from tests.workflows.admin_support import halt as signed_halt
from tests.workflows.admin_support import operator_key
from tests.workflows.admin_support import start_sealed as start_action
from tests.workflows.capabilities_support import network
from tests.workflows.conftest import Harness, eventually
from westworld import peers
from westworld.agents import AgentActionInput, AnomalyWatchInput, NetworkHaltResult
from westworld.anomaly import AnomalyConfig
from westworld.capability import HALTED
from westworld.errors import SIGNER_BAD_SIGNATURE, SIGNER_DUPLICATE
from westworld.keys import WATCH_ID, halt_id
from westworld.sandbox import MeshAction
from workers.cli import agent_ops as ops
from workflows.agent_action import AgentActionWorkflow
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.network_halt import NetworkHaltWorkflow

WATCH = AnomalyConfig(short_window=timedelta(minutes=10), long_window=timedelta(hours=24),
                      coverage_warn_pct=5, coverage_critical_pct=50, concentration_warn_pct=4,
                      concentration_critical_pct=8, rate_warn=50, denials_warn=3)


def small(agent: str, token: str, nodes: list[str]) -> AgentActionInput:
    return AgentActionInput(agent_id=agent, action_id=uuid.uuid4().hex[:10], token=token,
                            action=MeshAction.SET_CONFIG, node_ids=nodes, config={"mtu": "1400"})


async def sign_resume(h: Harness, handle: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult], guardian: str,
                      key: bytes) -> int:
    status = await handle.query(NetworkHaltWorkflow.status)
    return await handle.execute_update(NetworkHaltWorkflow.submit_guardian_signature, peers.SignatureRequest(
        signer_id=guardian, signature=peers.sign(key, bytes.fromhex(status.digest))))


@pytest.mark.usefixtures("fresh_watch")
async def test_creeping_takeover_is_caught_halts_everything_until_guardians_resume(harness: Harness) -> None:
    h = harness
    net = await network(h, 200, peers_n=5, guardians_n=3)
    creeper = await net.store.mint("creeper", ["set_config"])
    bystander = await net.store.mint("bystander", ["set_config"])
    # stricter than the defaults: the operator signs the start
    watch = await h.client.start_workflow(
        AnomalyWatchWorkflow.run, ops.sign_watch_start(AnomalyWatchInput(
            config=WATCH, poll_interval=timedelta(seconds=1), guardians_required=2, continue_after_polls=4),
            [operator_key(h)]),
        id=WATCH_ID, task_queue=h.task_queue)  # only the network's watch may halt it
    # The creeper touches 2 nodes at a time: each action is narrow (1% of the network, no peers needed)
    steps = 0
    for i in range(0, 40, 2):
        res = await (await start_action(h, small("creeper", creeper, net.nodes[i:i + 2]))).result()
        if not res.allowed:
            assert res.caveat == HALTED
            break
        steps += 1
        status = await watch.query(AnomalyWatchWorkflow.status)
        if status.halts:
            break
    status = await eventually(lambda: watch.query(AnomalyWatchWorkflow.status), lambda s: bool(s.halts))
    assert 8 <= steps <= 14, f"caught after {steps} small actions"
    epoch = status.halts[0]
    halt: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult] = h.client.get_workflow_handle_for(
        NetworkHaltWorkflow.run, halt_id(epoch))
    halt_status = await eventually(lambda: halt.query(NetworkHaltWorkflow.status), lambda s: s.halted)
    caught = re.search(r"creeper touched (\d+) distinct nodes of 200 live in 1 day", halt_status.reason)
    assert caught and 16 <= int(caught[1]) <= 2 * steps, halt_status.reason  # >= 8% of the network, by creeping

    # Every check now fails, for any agent and any action
    for agent, token in (("bystander", bystander), ("creeper", creeper)):
        res = await (await start_action(h, small(agent, token, net.nodes[100:101]))).result()
        assert (res.allowed, res.caveat) == (False, HALTED)

    # Guardians: a forged signature and a repeat are refused; two distinct guardians resume
    gids = sorted(net.guardian_keys)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await sign_resume(h, halt, gids[0], net.guardian_keys[gids[1]])
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == SIGNER_BAD_SIGNATURE
    assert await sign_resume(h, halt, gids[0], net.guardian_keys[gids[0]]) == 1
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await sign_resume(h, halt, gids[0], net.guardian_keys[gids[0]])
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == SIGNER_DUPLICATE
    assert (await halt.query(NetworkHaltWorkflow.status)).halted
    assert await sign_resume(h, halt, gids[2], net.guardian_keys[gids[2]]) == 2
    result = await halt.result()
    assert result.resumed_by == [gids[0], gids[2]]
    assert not (await net.store.halt_state()).halted

    res = await (await start_action(h, small("bystander", bystander, net.nodes[150:151]))).result()
    assert res.allowed
    kinds = [e.kind for e in await h.resources.audit.latest(200)]
    assert "network.halt" in kinds and "network.resume" in kinds
    assert kinds.index("network.halt") < kinds.index("network.resume")

    # the watch continues as new (every 4 polls) and carries its state: the halt it started, its feed position
    first_run = watch.first_execution_run_id or watch.result_run_id
    latest: WorkflowHandle[AnomalyWatchWorkflow, None] = h.client.get_workflow_handle_for(
        AnomalyWatchWorkflow.run, watch.id)
    await eventually(latest.describe, lambda d: d.run_id != first_run, timeout=30)
    # the new run polls on (its first poll re-reads the policy and the signers): its feed position passes the steps
    after = await eventually(lambda: latest.query(AnomalyWatchWorkflow.status), lambda s: s.after_seq >= steps,
                             timeout=30)
    assert after.halts == [epoch]
    await watch.terminate("test over")


async def test_halt_started_directly_blocks_checks_and_findings_are_graded(harness: Harness) -> None:
    h = harness
    net = await network(h, 20, guardians_n=2)
    token = await net.store.mint("ops", ["restart"])
    epoch = await signed_halt(h, "drill", guardians_required=1)  # asks for 1: the policy's 2 hold
    halt: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult] = h.client.get_workflow_handle_for(
        NetworkHaltWorkflow.run, halt_id(epoch))
    status = await eventually(lambda: halt.query(NetworkHaltWorkflow.status), lambda s: s.halted)
    assert status.guardians_required == 2
    res = await (await start_action(h, AgentActionInput(agent_id="ops", action_id="r1", token=token,
                                                        action=MeshAction.RESTART, node_ids=net.nodes[:1]))).result()
    assert (res.allowed, res.caveat) == (False, HALTED)
    # an hour passes without a guardian: still halted, the step says what it waits for
    await h.skipper.fast_forward(halt, timedelta(hours=1, minutes=5))
    assert (await halt.query(NetworkHaltWorkflow.status)).halted
    gids = sorted(net.guardian_keys)
    await sign_resume(h, halt, gids[0], net.guardian_keys[gids[0]])
    assert (await halt.query(NetworkHaltWorkflow.status)).halted
    await sign_resume(h, halt, gids[1], net.guardian_keys[gids[1]])
    assert (await halt.result()).resumed_by == gids


async def test_a_halt_declared_while_peers_sign_stops_the_wide_action(harness: Harness) -> None:
    h = harness
    net = await network(h, 100, peers_n=3, guardians_n=2)
    token = await net.store.mint("rollout", ["set_version"])
    action = await start_action(h, AgentActionInput(agent_id="rollout", action_id="w1", token=token,
                                                    action=MeshAction.SET_VERSION, node_ids=net.nodes[:30],
                                                    version="2.0"))
    status = await eventually(lambda: action.query(AgentActionWorkflow.status),
                              lambda s: s.step == "awaiting peer signatures")
    epoch = await signed_halt(h, "drill during a rollout")
    halt: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult] = h.client.get_workflow_handle_for(
        NetworkHaltWorkflow.run, halt_id(epoch))
    await eventually(lambda: halt.query(NetworkHaltWorkflow.status), lambda s: s.halted)
    for pid in sorted(net.peer_keys)[:3]:  # the policy's k
        await action.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
            signer_id=pid, signature=peers.sign(net.peer_keys[pid], bytes.fromhex(status.digest))))
    result = await action.result()
    assert (result.allowed, result.caveat, result.executed) == (False, HALTED, False)
    assert await net.store.usage_in_window("rollout", datetime.now(UTC) - timedelta(hours=1)) == 0
    for gid in sorted(net.guardian_keys):
        await sign_resume(h, halt, gid, net.guardian_keys[gid])
    await halt.result()
