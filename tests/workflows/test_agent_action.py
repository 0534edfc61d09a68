"""AgentActionWorkflow on a real Temporal server and SQLite: token checks, peer signatures, budget, audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from tests.workflows.capabilities_support import network, start_action
from tests.workflows.conftest import Harness, eventually
from westworld import capability as cap
from westworld import peers
from westworld.agents import AgentActionInput
from westworld.errors import SIGNER_BAD_SIGNATURE, SIGNER_DUPLICATE, SIGNER_UNKNOWN
from westworld.sandbox import MeshAction, MeshActionInput, MeshTarget, SandboxRef
from workflows.agent_action import AgentActionWorkflow


def action(agent: str, token: str, nodes: list[str], **kw: object) -> AgentActionInput:
    return AgentActionInput.model_validate({"agent_id": agent, "action_id": uuid.uuid4().hex[:12], "token": token,
                                           "action": MeshAction.SET_VERSION, "node_ids": nodes, "version": "2.1.0",
                                           **kw})


async def audit_kinds(h: Harness) -> list[tuple[str, str]]:
    return [(e.kind, e.subject) for e in await h.resources.audit.latest(100)]


async def test_narrow_token_is_refused_a_wide_action_naming_the_caveat(harness: Harness) -> None:
    net = await network(harness, 200)
    token = cap.attenuate(await net.store.mint("router", ["set_version"]), ["affects_nodes_le = 10"])
    handle = await start_action(harness, action("router", token, net.nodes[:40]))
    result = await handle.result()
    assert not result.allowed
    assert result.caveat == "affects_nodes_le = 10"
    assert "touches 40 nodes, more than 10" in result.reason
    assert ("capability.denied", handle.id) in await audit_kinds(harness)

    pct = cap.attenuate(await net.store.mint("router", ["set_version"]), ["affects_network_pct_le = 1.0"])
    result = await (await start_action(harness, action("router", pct, net.nodes[:3]))).result()
    assert (result.allowed, result.caveat) == (False, "affects_network_pct_le = 1.0")
    assert "3 of 200 live nodes (1.50%)" in result.reason

    other = await (await start_action(harness, action("router", token, net.nodes[:2], action="restart"))).result()
    assert (other.allowed, other.caveat) == (False, "actions = set_version")


async def test_wide_action_passes_only_with_k_distinct_peer_signatures(harness: Harness) -> None:
    net = await network(harness, 100, peers_n=5)
    token = await net.store.mint("rollout", ["set_version"])
    handle = await start_action(harness, action("rollout", token, net.nodes[:30], peers_required=3))
    status = await eventually(lambda: handle.query(AgentActionWorkflow.status),
                              lambda s: s.step == "awaiting peer signatures")
    assert status.wide and status.peers_required == 3
    digest = bytes.fromhex(status.digest)
    peer_ids = sorted(net.peer_keys)

    async def submit(signer: str, signature: str) -> int:
        return await handle.execute_update(AgentActionWorkflow.submit_peer_signature,
                                           peers.SignatureRequest(signer_id=signer, signature=signature))

    async def refused(signer: str, signature: str) -> str:
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await submit(signer, signature)
        assert isinstance(err.value.cause, ApplicationError)
        return str(err.value.cause.type)

    # forgery: a key that is not the peer's; an unregistered signer; a signature over another action's digest
    assert await refused(peer_ids[0], peers.sign(net.peer_keys[peer_ids[1]], digest)) == SIGNER_BAD_SIGNATURE
    assert await refused("intruder", peers.sign(net.peer_keys[peer_ids[0]], digest)) == SIGNER_UNKNOWN
    other = peers.action_digest(peers.ActionDigestInput(workflow_id="agent-action:rollout:other", action_id="other",
                                                        agent_id="rollout", action="set_version",
                                                        node_ids=net.nodes[:30], version="2.1.0"))
    assert await refused(peer_ids[0], peers.sign(net.peer_keys[peer_ids[0]], other)) == SIGNER_BAD_SIGNATURE
    assert await submit(peer_ids[0], peers.sign(net.peer_keys[peer_ids[0]], digest)) == 1
    assert await refused(peer_ids[0], peers.sign(net.peer_keys[peer_ids[0]], digest)) == SIGNER_DUPLICATE
    assert (await handle.query(AgentActionWorkflow.status)).step == "awaiting peer signatures"
    assert await submit(peer_ids[1], peers.sign(net.peer_keys[peer_ids[1]], digest)) == 2
    assert await submit(peer_ids[2], peers.sign(net.peer_keys[peer_ids[2]], digest)) == 3
    result = await handle.result()
    assert result.allowed and result.wide and result.peers == peer_ids[:3]
    with pytest.raises(RPCError, match="already completed"):  # a late signature changes nothing
        await submit(peer_ids[3], peers.sign(net.peer_keys[peer_ids[3]], digest))
    entries = await harness.resources.audit.latest(5)
    allowed = [e for e in entries if e.kind == "capability.allowed" and e.subject == handle.id]
    assert allowed and sorted(allowed[0].payload["signatures"]) == peer_ids[:3]


async def test_wide_action_without_enough_signatures_is_denied_when_the_wait_ends(harness: Harness) -> None:
    net = await network(harness, 100, peers_n=5)
    token = await net.store.mint("rollout", ["set_version"])
    handle = await start_action(harness, action("rollout", token, net.nodes[:30]))  # k: the policy's (3)
    status = await eventually(lambda: handle.query(AgentActionWorkflow.status),
                              lambda s: s.step == "awaiting peer signatures")
    peer = sorted(net.peer_keys)[0]
    await handle.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
        signer_id=peer, signature=peers.sign(net.peer_keys[peer], bytes.fromhex(status.digest))))
    await harness.skipper.fast_forward(handle, timedelta(hours=1, minutes=1))
    result = await handle.result()
    assert (result.allowed, result.caveat) == (False, "peer-signatures")
    assert "1 of 3 peer signatures" in result.reason
    # the reservation was released: the nodes do not count against the agent's budget
    assert await net.store.usage_in_window("rollout", result_since()) == 0

    too_few = await (await start_action(harness, action("rollout", token, net.nodes[:30], peers_required=6))).result()
    assert (too_few.allowed, too_few.caveat) == (False, "peer-signatures")
    assert "only 5 peers are registered" in too_few.reason


def result_since() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


async def test_budget_is_exhausted_by_many_small_actions(harness: Harness) -> None:
    net = await network(harness, 1000)
    token = cap.attenuate(await net.store.mint("creeper", ["set_version"]), ["budget = 12/3600s"])
    outcomes = []
    for i in range(5):
        res = await (await start_action(harness, action("creeper", token, net.nodes[i * 3:i * 3 + 3]))).result()
        outcomes.append((res.allowed, res.caveat))
    assert outcomes[:4] == [(True, "")] * 4
    assert outcomes[4] == (False, "budget = 12/3600s")
    # touching nodes already counted stays inside the budget: it is distinct nodes that are limited
    again = await (await start_action(harness, action("creeper", token, net.nodes[:3]))).result()
    assert again.allowed


async def test_forged_and_foreign_tokens_are_denied(harness: Harness) -> None:
    net = await network(harness, 50)
    token = await net.store.mint("router", ["set_version"])
    forged = cap.mint(b"\x00" * 32, cap.identity_of(token), ["set_version"])
    res = await (await start_action(harness, action("router", forged, net.nodes[:1]))).result()
    assert (res.allowed, res.caveat) == (False, "signature")
    res = await (await start_action(harness, action("mallory", token, net.nodes[:1]))).result()
    assert (res.allowed, res.caveat) == (False, "agent")
    res = await (await start_action(harness, action("router", "not-a-token", net.nodes[:1]))).result()
    assert (res.allowed, res.caveat) == (False, "token")
    res = await (await start_action(harness, action("router", token, ["nowhere-1"]))).result()
    assert (res.allowed, res.caveat) == (False, "registered-nodes")
    await net.store.revoke_token(cap.identity_of(token).token_id, "test", datetime.now(UTC))
    res = await (await start_action(harness, action("router", token, net.nodes[:1]))).result()
    assert (res.allowed, res.caveat) == (False, "revoked")


async def test_an_allowed_action_executes_on_real_mesh_nodes(harness: Harness, mesh_nodes: SandboxRef) -> None:
    net = await network(harness, 200)
    now = datetime.now(UTC)
    for node in mesh_nodes.nodes:
        await net.store.add_node(node.id, "lab", None, now)
    token = cap.attenuate(await net.store.mint("upgrader", ["set_version"]), ["regions = lab", "affects_nodes_le = 2"])
    chosen = [n.id for n in mesh_nodes.nodes[:2]]
    # the way a canary step runs as an agent action: its MeshActionInput wrapped, the result unwrapped
    step = MeshActionInput(target=MeshTarget(nodes=mesh_nodes.nodes), action=MeshAction.SET_VERSION,
                           node_ids=chosen, version="1.5.0", action_id="canary:demo:step-0")
    res = await (await start_action(harness, AgentActionInput.for_mesh_action("upgrader", token, step))).result()
    assert res.allowed and res.executed and sorted(res.applied) == sorted(chosen)
    assert res.to_mesh_result(step.action_id).previous == dict.fromkeys(chosen, "1.4.0")
    async with httpx.AsyncClient(timeout=5) as http:
        versions = {n.id: (await http.get(f"{n.admin_url}/status")).json()["version"] for n in mesh_nodes.nodes}
    assert versions == {chosen[0]: "1.5.0", chosen[1]: "1.5.0", mesh_nodes.nodes[2].id: "1.4.0"}
    # a denied action never reaches the nodes
    all_three = [n.id for n in mesh_nodes.nodes]
    res = await (await start_action(harness, action("upgrader", token, all_three, version="9.9.9",
                                                    target=MeshTarget(nodes=mesh_nodes.nodes)))).result()
    assert (res.allowed, res.executed, res.caveat) == (False, False, "affects_nodes_le = 2")
    async with httpx.AsyncClient(timeout=5) as http:
        after = {n.id: (await http.get(f"{n.admin_url}/status")).json()["version"] for n in mesh_nodes.nodes}
    assert after == versions
