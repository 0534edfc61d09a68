"""Protections change only by authorised decisions (docs/security.md, docs/capabilities.md "Who may change a
protection"). The attacker reaches Temporal with a working client but holds no entitled key: each class shows
one rule's unauthorised change refused (``Unauthorised``, with the reason) and the authorised one accepted and
audited. Real worker, Temporal, anvil and SQLite (the harness); keys are real Ed25519 keys.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from tests.workflows.admin_support import admin, client_settings, operator_key, start_sealed
from tests.workflows.capabilities_support import network
from tests.workflows.conftest import Harness, eventually
from westworld import authority, peers
from westworld import capability as cap
from westworld.agents import (
    AdminAction,
    AdminChange,
    AgentActionInput,
    AnomalyWatchInput,
    AnomalyWatchStatus,
    NetworkHaltInput,
    NetworkHaltResult,
    WatchCarry,
    WatchConfigRequest,
    WatchSettings,
    WatchStopRequest,
)
from westworld.anomaly import AnomalyConfig
from westworld.errors import INJECTED_STATE, UNAUTHORISED, Refused
from westworld.keys import halt_id
from westworld.sandbox import MeshAction
from workers.cli import agent_ops as ops
from workers.wiring.capabilities import open_store
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.capability_admin import CapabilityAdminWorkflow
from workflows.network_halt import NetworkHaltWorkflow

WatchHandle = WorkflowHandle[AnomalyWatchWorkflow, None]
TIGHTER = WatchSettings(config=AnomalyConfig(concentration_critical_pct=8.0), poll_interval=timedelta(seconds=2))


def new_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def refusal(err: pytest.ExceptionInfo[WorkflowUpdateFailedError] | pytest.ExceptionInfo[WorkflowFailureError]
            | pytest.ExceptionInfo[Refused]) -> tuple[str | None, str]:
    e = err.value
    if isinstance(e, Refused):
        return e.type, e.message
    cause = e.cause
    assert isinstance(cause, ApplicationError), cause
    return cause.type, cause.message


async def guardians(h: Harness, n: int = 3) -> dict[str, bytes]:
    """``n`` guardians: the first k (2) registered at genesis by the operator, the rest by those k."""
    keys = {f"g{i}-{uuid.uuid4().hex[:4]}": new_key() for i in range(n)}
    for i, (gid, key) in enumerate(keys.items()):
        signers = [operator_key(h)] if i < 2 else list(keys.values())[:2]
        await admin(h, AdminChange(action=AdminAction.ADD_GUARDIAN, subject=gid, public_key=peers.public_key_of(key)),
                    signers)
    return keys


async def start_watch(h: Harness, inp: AnomalyWatchInput | None = None, watch_id: str = "test-watch",
                      keys: list[bytes] | None = None) -> WatchHandle:
    wid = f"{watch_id}-{uuid.uuid4().hex[:6]}"
    start = inp or AnomalyWatchInput()
    handle = await h.client.start_workflow(AnomalyWatchWorkflow.run, ops.sign_watch_start(start, keys, wid)
                                           if keys else start, id=wid, task_queue=h.task_queue)
    await eventually(lambda: handle.query(AnomalyWatchWorkflow.status), lambda s: s.protected)
    return handle


async def status(handle: WatchHandle) -> AnomalyWatchStatus:
    return await handle.query(AnomalyWatchWorkflow.status)


async def audit_of(h: Harness, kind: str) -> list[dict[str, object]]:
    return [e.payload for e in await h.resources.audit.latest(500) if e.kind == kind]


class TestWatchThresholdsChangeOnlyBySignatures:
    """A key-less client cannot reconfigure the watch; tightening takes one operator, loosening k guardians,
    and nothing goes looser than the policy whoever signs; a signature counts once and expires."""

    async def test_the_reported_attack_and_each_forgery_are_refused(self, harness: Harness) -> None:
        h = harness
        g = await guardians(h)
        watch = await start_watch(h)
        try:
            # the finding: critical thresholds at 1000 %, one guardian to resume, sent with no key at all
            attack = WatchConfigRequest(config=AnomalyConfig(coverage_critical_pct=1000,
                                                             concentration_critical_pct=1000),
                                        guardians_required=1, reason="nothing to see")
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, attack)
            kind, why = refusal(err)
            assert kind == UNAUTHORISED and "looser than the network policy, whoever signs" in why
            assert "coverage_critical_pct 1000 > policy coverage_critical_pct_max 10" in why
            assert "guardians_required 1 < policy guardians_required_min 2" in why
            # ... even signed by k guardians
            ops.sign_watch_change(attack, "watch.reconfigure", watch.id, list(g.values())[:2])
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, attack)
            assert refusal(err)[0] == UNAUTHORISED

            tighten = WatchConfigRequest(**TIGHTER.model_dump(), reason="drill")
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, tighten)
            assert refusal(err) == (UNAUTHORISED, f"reconfigure {watch.id}: unsigned; needs one registered operator")
            stranger = tighten.model_copy(deep=True)
            ops.sign_watch_change(stranger, "watch.reconfigure", watch.id, [new_key()])
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, stranger)
            assert "is not a registered operator" in refusal(err)[1]
            expired = tighten.model_copy(deep=True)
            ops.sign_watch_change(expired, "watch.reconfigure", watch.id, [operator_key(h)],
                                  lifetime=timedelta(seconds=-1))
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, expired)
            assert "the signatures expired at" in refusal(err)[1]
            other_watch = tighten.model_copy(deep=True)  # signed for another target
            ops.sign_watch_change(other_watch, "watch.reconfigure", "anomaly-watch", [operator_key(h)])
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, other_watch)
            assert "does not verify over this change" in refusal(err)[1]
            assert (await status(watch)).settings == WatchSettings()
            assert await audit_of(h, "watch.reconfigure") == []
        finally:
            await watch.terminate("test over")

    async def test_operator_tightens_guardians_loosen_back_each_signature_once(self, harness: Harness) -> None:
        h = harness
        g = await guardians(h)
        watch = await start_watch(h)
        try:
            signed = WatchConfigRequest(**TIGHTER.model_dump(), reason="drill", seq=0)
            ops.sign_watch_change(signed, "watch.reconfigure", watch.id, [operator_key(h)])
            assert await watch.execute_update(AnomalyWatchWorkflow.reconfigure, signed) == WatchSettings()
            now = await status(watch)
            assert (now.settings, now.admin_seq) == (TIGHTER, 1)
            with pytest.raises(WorkflowUpdateFailedError) as err:  # the same signed request again
                await watch.execute_update(AnomalyWatchWorkflow.reconfigure, signed)
            assert refusal(err) == (UNAUTHORISED, f"reconfigure {watch.id}: signed for sequence 0, the watch is at 1 "
                                                  "(a signature counts once)")

            with pytest.raises(Refused) as refused:  # loosening back: the operator alone is not enough
                await ops.reconfigure_watch(h.client, WatchSettings(), "restore", [operator_key(h)], watch.id)
            assert refusal(refused)[0] == UNAUTHORISED
            assert "needs 2 registered guardians" in refusal(refused)[1] and "loosens" in refusal(refused)[1]
            ids = sorted(g)
            assert await ops.reconfigure_watch(h.client, WatchSettings(), "restore", [g[ids[0]], g[ids[2]]],
                                               watch.id) == TIGHTER
            assert (await status(watch)).settings == WatchSettings()
            audit = await audit_of(h, "watch.reconfigure")
            assert [(a["seq"], a["signed_by"]) for a in audit] == [(0, ["operator"]), (1, [ids[0], ids[2]])]
        finally:
            await watch.terminate("test over")


class TestWatchStopsOnlyWithGuardians:
    async def test_operator_alone_cannot_stop_k_guardians_can(self, harness: Harness) -> None:
        h = harness
        g = await guardians(h)
        watch = await start_watch(h)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await watch.execute_update(AnomalyWatchWorkflow.stop, WatchStopRequest(reason="off"))
        assert refusal(err) == (UNAUTHORISED, f"stop {watch.id}: unsigned; needs 2 registered guardians")
        with pytest.raises(Refused) as refused:
            await ops.stop_watch(h.client, "off", [operator_key(h)], watch.id)
        assert "is not a registered guardian" in refusal(refused)[1]
        await ops.stop_watch(h.client, "maintenance", list(g.values())[:2], watch.id)
        await watch.result()  # the watch ended
        [entry] = await audit_of(h, "watch.stop")
        assert entry["reason"] == "maintenance" and len(entry["signed_by"]) == 2  # type: ignore[arg-type]


class TestWatchStartCannotBeLooserOrInjected:
    async def test_a_loose_start_is_tightened_a_strict_one_needs_an_operator_a_carry_is_refused(
            self, harness: Harness) -> None:
        h = harness
        loose = AnomalyWatchInput(config=AnomalyConfig(coverage_critical_pct=1000, concentration_critical_pct=500,
                                                       rate_high=10_000), poll_interval=timedelta(seconds=50),
                                  guardians_required=1)
        watch = await start_watch(h, loose)
        try:
            settings = (await status(watch)).settings
            assert settings is not None
            assert (settings.config.coverage_critical_pct, settings.config.concentration_critical_pct,
                    settings.config.rate_high, settings.guardians_required) == (10.0, 20.0, 100, 2)
        finally:
            await watch.terminate("test over")
        hair_trigger = AnomalyWatchInput(config=AnomalyConfig(concentration_warn_pct=0.1,
                                                              concentration_critical_pct=0.2))
        for signed_by in ([], [new_key()]):  # a start stricter than the defaults: unsigned, or by a stranger
            wid = f"anomaly-watch-{uuid.uuid4().hex[:6]}"
            start = ops.sign_watch_start(hair_trigger, signed_by, wid) if signed_by else hair_trigger
            strict = await h.client.start_workflow(AnomalyWatchWorkflow.run, start, id=wid, task_queue=h.task_queue)
            with pytest.raises(WorkflowFailureError) as err:
                await strict.result()
            kind, why = refusal(err)
            assert kind == UNAUTHORISED and "stricter than the defaults (concentration_warn_pct, " \
                "concentration_critical_pct)" in why
        signed = await start_watch(h, hair_trigger, keys=[operator_key(h)])  # one operator may
        assert (await status(signed)).settings == WatchSettings(config=hair_trigger.config)
        await signed.terminate("test over")
        injected = await h.client.start_workflow(
            AnomalyWatchWorkflow.run, AnomalyWatchInput(carry=WatchCarry(after_seq=10**9, admin_seq=7)),
            id=f"anomaly-watch-{uuid.uuid4().hex[:6]}", task_queue=h.task_queue)
        with pytest.raises(WorkflowFailureError) as err:
            await injected.result()
        assert refusal(err)[0] == INJECTED_STATE


class TestHaltOnlyByTheWatchOrAnOperator:
    async def test_a_direct_halt_is_refused_an_operators_halt_holds_for_the_policys_k(self, harness: Harness) -> None:
        h = harness
        store = await open_store(h.settings, h.resources.database)
        epoch = await store.allocate_halt("attack", "fake emergency")
        direct = await h.client.start_workflow(NetworkHaltWorkflow.run, NetworkHaltInput(
            epoch=epoch, reason="fake emergency", guardians_required=1), id=halt_id(epoch), task_queue=h.task_queue)
        with pytest.raises(WorkflowFailureError) as err:
            await direct.result()
        kind, why = refusal(err)
        assert kind == UNAUTHORISED and "never started directly" in why
        assert not (await store.halt_state()).halted

        with pytest.raises(Refused) as refused:
            await ops.start_halt(h.client, client_settings(h), "drill", 1, [new_key()])
        assert "is not a registered operator" in refusal(refused)[1]
        assert not (await store.halt_state()).halted

        signed = await ops.start_halt(h.client, client_settings(h), "drill", 1, [operator_key(h)])
        halt: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult] = h.client.get_workflow_handle_for(
            NetworkHaltWorkflow.run, f"halt:{signed}")
        st = await eventually(lambda: halt.query(NetworkHaltWorkflow.status), lambda s: s.halted)
        assert st.guardians_required == 2  # asked for 1: the policy's floor holds
        [entry] = await audit_of(h, "capability.admin")
        assert entry["action"] == "halt" and entry["signed_by"] == ["operator"]
        await halt.terminate("test over")


    async def test_a_watch_of_anyones_making_cannot_halt_the_network(self, harness: Harness) -> None:
        h = harness
        net = await network(h, 200, peers_n=0, guardians_n=0)
        token = await net.store.mint("busy", ["set_config"])
        # a hair trigger, under an id of somebody's choosing
        rogue = await start_watch(h, AnomalyWatchInput(config=AnomalyConfig(
            coverage_warn_pct=0.2, coverage_critical_pct=0.5, concentration_warn_pct=0.2,
            concentration_critical_pct=0.5), poll_interval=timedelta(seconds=1)), watch_id="rogue-watch",
            keys=[operator_key(h)])  # even signed: a watch under another id does not decide halts
        try:
            result = await (await start_sealed(h, AgentActionInput(
                agent_id="busy", action_id="a1", token=token, action=MeshAction.SET_CONFIG,
                node_ids=net.nodes[:2], config={"mtu": "1400"}))).result()  # narrow: 1 % of 200
            assert result.allowed
            found = await eventually(lambda: status(rogue), lambda s: bool(s.halts))
            halt = h.client.get_workflow_handle(f"halt:{found.halts[0]}")
            with pytest.raises(WorkflowFailureError) as err:
                await halt.result()
            kind, why = refusal(err)
            assert kind == UNAUTHORISED and "another workflow (rogue-watch" in why
            assert not (await net.store.halt_state()).halted
        finally:
            await rogue.terminate("test over")


class TestRegistriesChangeOnlyBySignatures:
    async def test_genesis_by_the_operator_then_only_k_guardians(self, harness: Harness) -> None:
        h = harness
        peer = new_key()
        change = AdminChange(action=AdminAction.ADD_PEER, subject="p1", public_key=peers.public_key_of(peer))
        with pytest.raises(Refused) as refused:  # anyone else, even at genesis
            await admin(h, change, [new_key()])
        assert refusal(refused)[0] == UNAUTHORISED
        g = await guardians(h)  # genesis: the operator registers the first guardians
        with pytest.raises(Refused) as refused:  # after genesis the operator alone may not
            await admin(h, change, [operator_key(h)])
        assert refusal(refused) == (UNAUTHORISED, "add_peer refused (Unauthorised: add_peer p1: key "
                                    + peers.public_key_of(operator_key(h))[:16]
                                    + "… is not a registered guardian (needs 2 registered guardians))")
        ids = sorted(g)
        with pytest.raises(Refused) as refused:
            await admin(h, change, [g[ids[0]]])
        assert "needs 2 registered guardians, has 1" in refusal(refused)[1]
        done = await admin(h, change, [g[ids[0]], g[ids[1]]])
        assert done.signed_by == ids[:2]
        registry = await ops.registries(h.client, client_settings(h))
        assert registry.peers == {"p1": peers.public_key_of(peer)}
        removed = await admin(h, AdminChange(action=AdminAction.REMOVE_GUARDIAN, subject=ids[2]),
                              [g[ids[0]], g[ids[1]]])
        assert removed.detail == f"removed {ids[2]}"
        audit = await audit_of(h, "capability.admin")
        assert [a["action"] for a in audit][-2:] == ["add_peer", "remove_guardian"]
        assert audit[-2]["signed_by"] == ids[:2]


class TestCapabilitiesMintedAndRevokedOnlyBySignatures:
    async def test_mint_revoke_and_root_keys_need_an_operator_and_a_signature_counts_once(
            self, harness: Harness) -> None:
        h = harness
        s = client_settings(h)
        with pytest.raises(Refused) as refused:
            await ops.mint(h.client, s, "bot", ["restart"], [new_key()])
        assert refusal(refused)[0] == UNAUTHORISED
        await admin(h, AdminChange(action=AdminAction.ROTATE_KEY), [operator_key(h)])
        token = await ops.mint(h.client, s, "bot", ["restart"], [operator_key(h)])
        assert cap.identity_of(token).agent_id == "bot"
        [mint] = [a for a in await audit_of(h, "capability.admin") if a["action"] == "mint"]
        assert mint["signed_by"] == ["operator"] and token not in str(mint)

        # a signed change whose content is altered, started under another id, or run twice
        wid, signed = ops.signed_input(AdminChange(action=AdminAction.REVOKE_ALL), [operator_key(h)])
        altered = signed.model_copy(update={"change": AdminChange(action=AdminAction.RETIRE_KEY, subject="k")})
        for inp, id_ in ((altered, wid), (signed, f"capability-admin:{uuid.uuid4().hex}")):
            with pytest.raises(WorkflowFailureError) as err:
                await h.client.execute_workflow(CapabilityAdminWorkflow.run, inp, id=id_, task_queue=h.task_queue)
            assert refusal(err)[0] == UNAUTHORISED and "does not verify over this change" in refusal(err)[1]
        done = await h.client.execute_workflow(CapabilityAdminWorkflow.run, signed, id=wid, task_queue=h.task_queue,
                                               id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        assert done.detail == "revocation epoch is now 1: every older token is revoked"
        with pytest.raises(WorkflowFailureError) as err:
            await h.client.execute_workflow(CapabilityAdminWorkflow.run, signed, id=wid, task_queue=h.task_queue,
                                            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        assert refusal(err)[0] == UNAUTHORISED and "already applied" in refusal(err)[1]
        registry = await ops.registries(h.client, s)
        assert registry.revocation_epoch == 1
        assert registry.active_key and datetime.now(UTC) > signed.signed.expires_at - authority.MAX_LIFETIME
