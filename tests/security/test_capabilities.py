"""Hostile tests of agent actions (docs/capabilities.md, docs/security.md). One class per rule:

- the constrained party never chooses its constraint: when an action is wide and how many peers must sign it are
  the network policy's; an agent, a canary input or a rollout spec may ask stricter, a looser ask is refused
  (``LooserThanPolicy``, naming the policy's value), and the wait for peers is capped by the policy;
- a peer's discharge authorises only the action it was given for, and only until its near expiry;
- no capability token is ever in workflow history: it travels sealed to the workers for one workflow execution,
  so what a key-less reader of history copies cannot start any other action (refused with its reason);
- the CLI takes inline tokens, never echoes one, and a denied `agent act` exits non-zero.

Real Temporal, real worker, real SQLite and anvil (the policy in force is deploy/policy.yaml, its hash on chain).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from activities.policy import DEFAULT_POLICY_FILE, read_policy_file
from tests.workflows.capabilities_support import directory, network, sealed_canary, sealed_experiment, start_action
from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import RELAY_ERRORS, spec, unique
from westworld import capability as cap
from westworld import caveats as cv
from westworld import discharge as dc
from westworld import peers
from westworld.agents import AgentActionInput, AgentActionResult
from westworld.errors import LOOSER_THAN_POLICY, TOKEN_NOT_SEALED, WestworldError
from westworld.experiment_run import ExperimentInput
from westworld.keys import canary_id
from westworld.peer_rule import is_wide, peer_rule
from westworld.rollout import CanaryInput
from westworld.sandbox import Backend, MeshAction, MeshTarget, NodeRef
from workers.cli.agent_common import EXIT_DENIED, seal_action
from workflows.agent_action import AgentActionWorkflow

POLICY = read_policy_file(DEFAULT_POLICY_FILE)  # the policy whose hash the deployment put on chain


def action(agent: str, token: str, nodes: list[str], **kw: Any) -> AgentActionInput:
    return AgentActionInput.model_validate({"agent_id": agent, "action_id": uuid.uuid4().hex[:12], "token": token,
                                           "action": MeshAction.SET_VERSION, "node_ids": nodes, "version": "2.1.0",
                                           **kw})


async def refusal(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    cause = err.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


class TestThePeerRuleIsThePolicys:
    async def test_an_agent_asking_for_fewer_peers_or_higher_thresholds_is_refused(self, harness: Harness) -> None:
        net = await network(harness, 200)
        token = await net.store.mint("taker", ["set_version"])
        for ask, rule in (({"peers_required": 1}, "peers.peers_required = 3"),
                          ({"peer_threshold_nodes": 1000}, "peers.threshold_nodes = 20"),
                          ({"peer_threshold_pct": 100.0}, "peers.threshold_pct = 1.0")):
            handle = await start_action(harness, action("taker", token, net.nodes[:3], **ask))
            refused = await refusal(handle)
            assert refused.type == LOOSER_THAN_POLICY and rule in refused.message, refused.message
            entries = [e for e in await harness.resources.audit.latest(10) if e.subject == handle.id]
            assert entries and entries[0].kind == "capability.denied"  # the refusal is audited

    async def test_a_three_node_action_in_a_small_network_needs_the_policys_three_peers(self,
                                                                                       harness: Harness) -> None:
        net = await network(harness, 10, peers_n=5)
        token = await net.store.mint("rollout", ["set_version"])
        handle = await start_action(harness, action("rollout", token, net.nodes[:3]))  # asks nothing
        status = await eventually(lambda: handle.query(AgentActionWorkflow.status),
                                  lambda s: s.step == "awaiting peer signatures")
        assert status.wide and status.peers_required == POLICY.peers.peers_required == 3
        digest = bytes.fromhex(status.digest)
        ids = sorted(net.peer_keys)
        for n, pid in enumerate(ids[:2], 1):
            assert await handle.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
                signer_id=pid, signature=peers.sign(net.peer_keys[pid], digest))) == n
        assert (await handle.query(AgentActionWorkflow.status)).step == "awaiting peer signatures"  # 2 is not 3
        await handle.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
            signer_id=ids[2], signature=peers.sign(net.peer_keys[ids[2]], digest)))
        assert (await handle.result()).allowed

    async def test_a_stricter_ask_is_honoured_and_the_wait_is_capped(self, harness: Harness) -> None:
        net = await network(harness, 10, peers_n=5)
        token = await net.store.mint("careful", ["set_version"])
        handle = await start_action(harness, action("careful", token, net.nodes[:3], peers_required=4,
                                                    peer_wait=timedelta(days=30)))
        status = await eventually(lambda: handle.query(AgentActionWorkflow.status),
                                  lambda s: s.step == "awaiting peer signatures")
        assert status.peers_required == 4
        await harness.skipper.fast_forward(handle, POLICY.peers.wait_max + timedelta(minutes=1))
        result = await handle.result()
        assert (result.allowed, result.caveat) == (False, "peer-signatures")
        assert f"0 of 4 peer signatures within {POLICY.peers.wait_max}" in result.reason  # not 30 days

    async def test_a_canary_asking_for_fewer_peers_is_refused_before_anything_moves(self, harness: Harness) -> None:
        net = await network(harness, 2, peers_n=0, guardians_n=0)
        token = await net.store.mint("canary-bot", ["set_version"])
        inp = await sealed_canary(harness, CanaryInput(
            name=f"looser-{uuid.uuid4().hex[:6]}", version="2.0", steps=[1, 2], agent_id="canary-bot",
            capability_token=token, peers_required=2,
            target=MeshTarget(backend=Backend.LOCAL, nodes=[NodeRef(id=n, address=n) for n in net.nodes])))
        handle = await harness.client.start_workflow("CanaryRolloutWorkflow", inp, id=canary_id(inp.name),
                                                     task_queue=harness.task_queue)
        refused = await refusal(handle)
        assert refused.type == LOOSER_THAN_POLICY and "peers.peers_required = 3" in refused.message

    async def test_a_rollout_spec_asking_for_two_peers_fails_the_experiment_at_its_start(self,
                                                                                         harness: Harness) -> None:
        net = await network(harness, 2, peers_n=0, guardians_n=0)
        token = await net.store.mint("cradle-bot", ["set_version"])
        name = unique("looser")
        rollout = {"target": {"mesh_nodes": 4}, "steps": [1, 4], "agent": "cradle-bot",
                   "peer_policy": {"threshold": 2}}
        inp = await sealed_experiment(harness, ExperimentInput(
            spec=spec(name, "1.4.0", rollout=rollout, chaos=[], metrics=[RELAY_ERRORS.model_dump(mode="json")]),
            rollout_capability_token=token))
        handle = await harness.client.start_workflow("ExperimentWorkflow", inp, id=f"experiment:{name}",
                                                     task_queue=harness.task_queue)
        refused = await refusal(handle)
        assert refused.type == LOOSER_THAN_POLICY
        assert "spec.rollout.peer_policy: threshold 2 is looser than the network policy (peers.peers_required = 3)" \
            in refused.message

    @given(nodes=st.integers(0, 100), pct=st.decimals(0, 100, places=2), k=st.integers(1, 64),
           size=st.integers(1, 10_000), live=st.integers(1, 100_000))
    @settings(max_examples=300, deadline=None)
    def test_any_accepted_ask_is_at_least_as_strict_as_the_policy(self, nodes: int, pct: Decimal, k: int,
                                                                  size: int, live: int) -> None:
        p = POLICY.peers
        if nodes > p.threshold_nodes or pct > p.threshold_pct or k < p.peers_required:
            with pytest.raises(WestworldError) as err:
                peer_rule(p, "prop", threshold_nodes=nodes, threshold_pct=pct, peers_required=k)
            assert err.value.type == LOOSER_THAN_POLICY
            return
        rule = peer_rule(p, "prop", threshold_nodes=nodes, threshold_pct=pct, peers_required=k)
        base = peer_rule(p, "prop")
        assert rule.peers_required >= base.peers_required
        assert is_wide(size, live, base) <= is_wide(size, live, rule)  # wide under the policy: wide under the ask


class TestDischargesAreBoundToTheirAction:
    async def _setup(self, h: Harness) -> tuple[str, str, bytes, list[str]]:
        net = await network(h, 200, peers_n=3)
        pid = sorted(net.peer_keys)[0]
        key = net.peer_keys[pid]
        token = dc.add_peer_caveat(await net.store.mint("gated", ["set_version", "restart"]), pid,
                                   bytes.fromhex(peers.public_key_of(key)), "approve", secrets.token_bytes(32),
                                   secrets.token_bytes(32), secrets.token_bytes(24), secrets.token_bytes(24))
        return token, pid, key, net.nodes

    async def test_a_discharge_for_one_action_does_not_allow_another(self, harness: Harness) -> None:
        token, pid, key, nodes = await self._setup(harness)
        given_for = action("gated", token, nodes[:1])
        d = dc.discharge(token, pid, key, [], action_digest=given_for.action_digest(),
                         valid_until=datetime.now(UTC) + timedelta(minutes=10))
        other = action("gated", token, nodes[5:6], action=MeshAction.RESTART, discharges=[d])
        denied = await (await start_action(harness, other)).result()
        assert (denied.allowed, denied.caveat) == (False, cap.DISCHARGE_ACTION)
        assert f"peer {pid}'s discharge was given for action {given_for.action_digest().hex()[:16]}" in denied.reason
        same_shape = action("gated", token, nodes[:1], discharges=[d])  # identical action, another action id
        assert (await (await start_action(harness, same_shape)).result()).caveat == cap.DISCHARGE_ACTION
        allowed = await (await start_action(harness, given_for.model_copy(update={"discharges": [d]}))).result()
        assert allowed.allowed

    async def test_an_expired_a_too_long_or_an_unbound_discharge_is_refused(self, harness: Harness) -> None:
        token, pid, key, nodes = await self._setup(harness)
        now = datetime.now(UTC)
        for valid_until, caveat, why in (
                (now - timedelta(minutes=1), cap.DISCHARGE_EXPIRED, "expired at"),
                (now + POLICY.peers.discharge_ttl_max + timedelta(minutes=5), cap.DISCHARGE,
                 "peers.discharge_ttl_max")):
            inp = action("gated", token, nodes[:1])
            d = dc.discharge(token, pid, key, [], action_digest=inp.action_digest(), valid_until=valid_until)
            res = await (await start_action(harness, inp.model_copy(update={"discharges": [d]}))).result()
            assert (res.allowed, res.caveat) == (False, caveat) and why in res.reason, res.reason
        # a discharge made the old way (no action, no expiry): what a peer gave before this fix
        cid = dc.peer_caveats(token)[0][1]
        opened = dc.open_peer_caveat(cid, pid, key)
        old = Macaroon(location=pid, identifier=cid, key=bytes.fromhex(opened.caveat_key))
        unbound = Macaroon.deserialize(token).prepare_for_request(old).serialize()
        res = await (await start_action(harness, action("gated", token, nodes[:1], discharges=[unbound]))).result()
        assert (res.allowed, res.caveat) == (False, cap.DISCHARGE) and "not bound to an action" in res.reason


    @given(other=st.binary(min_size=32, max_size=32), ahead=st.integers(-10**6, 10**6))
    @settings(max_examples=300, deadline=None)
    def test_a_discharge_allows_only_its_own_digest_until_its_near_expiry(self, other: bytes, ahead: int) -> None:
        """Pure check, every draw: another digest is refused; the expiry must be ahead and within the TTL."""
        now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        root_key, peer_key = bytes(range(32)), bytes(range(100, 132))
        ident = cap.TokenIdentity(key_id="k1", token_id="t1", agent_id="gated", epoch=0)
        token = dc.add_peer_caveat(cap.mint(root_key, ident, ["set_version"]), "p0",
                                   bytes.fromhex(peers.public_key_of(peer_key)), "approve", bytes(range(1, 33)),
                                   bytes(range(2, 34)), bytes(24), bytes(range(24)))
        mine = bytes(range(7, 39))
        until = now + timedelta(seconds=ahead)
        d = dc.discharge(token, "p0", peer_key, [], action_digest=mine, valid_until=until)
        state = cap.CheckState(live_nodes=1000, now=now, discharge_ttl_max=POLICY.peers.discharge_ttl_max)

        def decide(digest: bytes) -> cap.CheckResult:
            facts = cv.Facts(action="set_version", targets=[cv.Target(node_id="n1")], live_nodes=1000, now=now,
                             action_digest=digest.hex())
            return cap.check_token(token, [d], root_key, state, "gated", facts)

        shown = until.replace(microsecond=0)
        if other != mine:
            assert decide(other).caveat == cap.DISCHARGE_ACTION
        if shown <= now:
            assert decide(mine).caveat == cap.DISCHARGE_EXPIRED
        elif shown - now > POLICY.peers.discharge_ttl_max:
            assert decide(mine).caveat == cap.DISCHARGE and "discharge_ttl_max" in decide(mine).reason
        else:
            assert decide(mine).allowed


def _payloads(msg: Any) -> list[Payload]:
    """Every Payload inside a history event (inputs, results, headers, memos, failures' details)."""
    found: list[Payload] = []
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items = [value]
        elif isinstance(value, Mapping):
            items = list(value.values())
        else:  # a repeated field
            items = list(value)
        for item in items:
            found += [item] if isinstance(item, Payload) else _payloads(item)
    return found


async def history_text(h: Harness, workflow_id: str, run_id: str | None = None) -> bytes:
    """Everything in a workflow's history as its payloads decode WITH the payload key (what a key holder sees)."""
    history = await h.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    codec = h.client.data_converter.payload_codec
    assert codec is not None
    blob = b""
    for event in history.events:
        found = _payloads(event)
        blob += b"".join(p.data for p in (await codec.decode(found) if found else []))
    return blob


class TestNoTokenInHistory:
    async def test_what_a_keyless_reader_copies_from_history_cannot_start_another_action(self,
                                                                                         harness: Harness) -> None:
        net = await network(harness, 200)
        token = cap.attenuate(await net.store.mint("ui-bot", ["set_version"]), ["affects_nodes_le = 5"])
        keyless = await Client.connect(harness.settings.temporal_address, data_converter=pydantic_data_converter)
        inp = seal_action(action("ui-bot", "-", net.nodes[:2]), token, await directory(harness))
        plain = inp.model_dump(mode="json")  # the JSON an operator pastes into the Temporal UI
        wid = inp.workflow_id
        await keyless.start_workflow("AgentActionWorkflow", plain, id=wid, task_queue=harness.task_queue)
        assert (await harness.client.get_workflow_handle(wid, result_type=AgentActionResult).result()).allowed
        # nothing in the history is the token, even decoded with the payload key
        assert token.encode() not in await history_text(harness, wid)
        # what a key-less reader of the history gets: the start input in plain JSON, the sealed box in it
        history = await keyless.get_workflow_handle(wid).fetch_history()
        started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
        stolen = json.loads(started.workflow_execution_started_event_attributes.input.payloads[0].data)["token"]
        assert stolen.startswith("wws1:") and token not in stolen

        async def replay(**changes: Any) -> AgentActionResult:
            body = {**plain, "token": stolen, **changes}
            started = await keyless.start_workflow(
                "AgentActionWorkflow", body, id=f"agent-action:{body['agent_id']}:{body['action_id']}",
                task_queue=harness.task_queue)  # the result is encrypted by the workers: read it with the key
            result: AgentActionResult = await harness.client.get_workflow_handle(
                started.id, run_id=started.result_run_id, result_type=AgentActionResult).result()
            return result

        other = await replay(action_id="another")  # another action of the same agent
        assert (other.allowed, other.caveat) == (False, "sealed-token")
        assert f"sealed for AgentActionWorkflow '{wid}', not for AgentActionWorkflow" in other.reason
        wider = await replay(node_ids=net.nodes[:5])  # the same action id, more nodes (a new run of the id)
        assert (wider.allowed, wider.caveat) == (False, "sealed-token") and "another input" in wider.reason
        again = await replay()  # the very same action, re-run after it closed
        assert (again.allowed, again.caveat) == (False, "sealed-token") and "already used by run" in again.reason
        # and as another workflow type: a rollout that would carry it
        canary = await harness.client.start_workflow("CanaryRolloutWorkflow", CanaryInput(
            name=f"stolen-{uuid.uuid4().hex[:6]}", version="2.0", steps=[2], agent_id="ui-bot",
            capability_token=stolen, target=MeshTarget(nodes=[NodeRef(id=n, address=n) for n in net.nodes[:2]])),
            id=f"canary:stolen-{uuid.uuid4().hex[:6]}", task_queue=harness.task_queue)
        refused = await refusal(canary)
        assert refused.type == TOKEN_NOT_SEALED and "not for CanaryRolloutWorkflow" in refused.message

    async def test_a_token_given_in_clear_is_refused_without_being_named(self, harness: Harness) -> None:
        net = await network(harness, 200)
        token = await net.store.mint("careless", ["set_version"])
        keyless = await Client.connect(harness.settings.temporal_address, data_converter=pydantic_data_converter)
        plain = action("careless", token, net.nodes[:1]).model_dump(mode="json")
        handle = await keyless.start_workflow("AgentActionWorkflow", plain, id=f"agent-action:careless:{uuid.uuid4()}",
                                              task_queue=harness.task_queue)
        refused = await refusal(handle)
        assert refused.type == TOKEN_NOT_SEALED
        assert f"revoke token {cap.identity_of(token).token_id}" in refused.message and token not in refused.message
        decisions = [e for e in await harness.resources.audit.latest(5) if e.subject == handle.id]
        assert decisions and decisions[0].payload["caveat"] == TOKEN_NOT_SEALED  # never checked, audited


async def cli(h: Harness, *args: str) -> tuple[int, str]:
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(h.settings.data_dir),
           "WESTWORLD_TEMPORAL_ADDRESS": h.settings.temporal_address, "WESTWORLD_TASK_QUEUE": h.task_queue}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return int(proc.returncode or 0), out.decode() + err.decode()


class TestCliTokens:
    async def test_inline_tokens_work_are_never_echoed_and_a_denial_exits_non_zero(self, harness: Harness) -> None:
        h = harness
        net = await network(h, 200)
        token = cap.attenuate(await net.store.mint("cli-bot", ["set_version"]), ["affects_nodes_le = 1"])
        assert len(token) > 255  # longer than a file name may be: once "File name too long", the token printed
        code, out = await cli(h, "agent", "inspect", token)
        assert code == 0 and "agent:    cli-bot" in out and token not in out
        tampered = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
        code, out = await cli(h, "agent", "act", "--token", tampered, "--action", "set_version", "--nodes",
                              net.nodes[0], "--version", "2.0")
        assert code in (1, EXIT_DENIED) and tampered not in out and "File name too long" not in out, out
        code, out = await cli(h, "agent", "act", "--token", token, "--action", "set_version", "--nodes",
                              ",".join(net.nodes[:2]), "--version", "2.0")
        assert code == EXIT_DENIED and "denied by caveat [affects_nodes_le = 1]" in out and token not in out, out
        code, out = await cli(h, "agent", "act", "--token", token, "--action", "set_version", "--nodes",
                              net.nodes[0], "--version", "2.0")
        assert code == 0 and "allowed" in out and token not in out, out
        code, out = await cli(h, "agent", "act", "--token", token, "--action", "set_version", "--nodes",
                              net.nodes[0], "--version", "2.0", "--peers-required", "1")
        assert code == 1 and LOOSER_THAN_POLICY in out and "peers.peers_required = 3" in out and token not in out
        code, out = await cli(h, "agent", "act", "--token", "x" * 400, "--action", "set_version", "--nodes",
                              net.nodes[0])
        assert code == 1 and "not a capability token" in out and "x" * 40 not in out, out

    async def test_a_peer_discharges_from_the_cli_for_one_action_and_the_agent_acts_with_it(self, harness: Harness,
                                                                                           tmp_path: Any) -> None:
        h = harness
        net = await network(h, 200, peers_n=3)
        pid = sorted(net.peer_keys)[0]
        key_file = tmp_path / "peer.key"
        key_file.write_text(net.peer_keys[pid].hex())
        token = await net.store.mint("gated-cli", ["set_version"])
        code, gated = await cli(h, "agent", "attenuate", token, "--peer", pid)  # the peer's key from the workers
        assert code == 0 and "third-party: a discharge from peer " + pid in (await cli(h, "agent", "inspect",
                                                                                        gated.strip()))[1]
        action = ("--action", "set_version", "--nodes", net.nodes[0], "--version", "2.0")
        code, out = await cli(h, "agent", "discharge", gated.strip(), "--peer", pid, "--key", str(key_file),
                              "--action-id", "d1", *action)
        assert code == 0, out
        discharge = out.strip()
        code, out = await cli(h, "agent", "act", "--token", gated.strip(), "--action-id", "d2", "--discharge",
                              discharge, *action)  # the same action under another id: another digest
        assert code == EXIT_DENIED and f"[{cap.DISCHARGE_ACTION}]" in out and discharge not in out, out
        code, out = await cli(h, "agent", "act", "--token", gated.strip(), "--action-id", "d1", "--discharge",
                              discharge, *action)
        assert code == 0 and "allowed" in out, out
