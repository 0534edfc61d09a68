"""`westworld` capabilities demo against the live stack (what `westworld up` started):

1. a narrow token is refused a wide action, the caveat named;
2. a wide action passes only once k peers have signed it (a forged signature is refused), and runs on real
   local mesh nodes (a 3-node sandbox this demo provisions and removes);
3. a creeping takeover (one agent, 2 nodes at a time, each step narrow) is caught by the network's anomaly watch
   (the one `westworld up` started), which halts the network: every check fails until 2 guardians sign the resume.
   For the demo the watch is reconfigured (its ``reconfigure`` update, audited) to a tighter creep threshold and a
   2 s poll, signed by the operator (tightening needs one); its previous settings are put back afterwards,
   whatever happens, signed by 2 guardians (loosening needs k).

The demo is a client like the CLI: registrations and mints are signed requests the worker checks
(CapabilityAdminWorkflow), signed with the operator key `westworld up` created (``<data dir>/operator.key``) and,
once guardians are registered, with the demo guardians' keys.

The network is the 3 real nodes plus 197 registered node entries (``sim-*``) that stand for the rest of a
200-node mesh: actions on those are decided and recorded, not executed (no process behind them here).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from temporalio.client import Client

from activities.http import HttpClient, open_http
from activities.sandbox.local import LocalSandbox
from westworld import capability as cap
from westworld import peers
from westworld.agents import AdminAction, AdminChange, AgentActionInput, AnomalyWatchInput, WatchSettings
from westworld.anomaly import AnomalyConfig
from westworld.keys import WATCH_ID
from westworld.sandbox import Arm, Backend, MeshAction, MeshTarget, ProvisionInput, SandboxRef, Workload
from workers.cli import agent_ops as ops
from workers.cli.agent_common import start_sealed_action
from workers.client import connect
from workers.demo.voters import Signers, demo_key
from workers.settings import Settings
from workers.stack import standing
from workflows.agent_action import AgentActionWorkflow
from workflows.anomaly_watch import AnomalyWatchWorkflow

Echo = Callable[[str], None]
SIMULATED = 197
WATCH = WatchSettings(config=AnomalyConfig(concentration_critical_pct=8.0), poll_interval=timedelta(seconds=2),
                      guardians_required=2)
WATCH_REASON = "capabilities demo: catch the creep at 8% of the network"


async def _register(s: Settings, signers: Signers, ref: SandboxRef) -> tuple[dict[str, bytes], dict[str, bytes]]:
    if not (await ops.registries(signers.client, s)).active_key:
        await signers.admin(AdminChange(action=AdminAction.ROTATE_KEY))
    await signers.admin(AdminChange(action=AdminAction.ADD_NODES, node_ids=[f"sim-{i:03d}" for i in range(SIMULATED)],
                                    region="sim"))
    await signers.admin(AdminChange(action=AdminAction.ADD_NODES, node_ids=[n.id for n in ref.nodes], region="lab"))
    known = await ops.registries(signers.client, s)
    peer_keys = {f"demo-peer-{i}": demo_key(s, f"demo-peer-{i}") for i in range(5)}
    for pid, key in peer_keys.items():
        if known.peers.get(pid) != peers.public_key_of(key):
            await signers.admin(AdminChange(action=AdminAction.ADD_PEER, subject=pid, region="sim",
                                            public_key=peers.public_key_of(key)))
    for gid, key in signers.guardians.items():
        if known.guardians.get(gid) != peers.public_key_of(key):
            await signers.admin(AdminChange(action=AdminAction.ADD_GUARDIAN, subject=gid,
                                            public_key=peers.public_key_of(key)))
    return peer_keys, signers.guardians


async def _act(client: Client, s: Settings, echo: Echo, inp: AgentActionInput) -> str:
    wid = await start_sealed_action(client, s, inp, inp.token)  # sealed to the workers for this action
    result = await ops.await_action(client, wid)
    echo(f"   {inp.agent_id} {inp.action.value} on {len(inp.node_ids)} nodes -> {ops.describe(result)}")
    return result.caveat if not result.allowed else ""


async def run_capabilities_demo(settings: Settings, echo: Echo) -> None:
    s = settings
    client = await connect(s)
    tag = uuid.uuid4().hex[:6]
    signers = Signers(s, client)
    async with open_http(10.0) as http:
        if (halt := (await ops.registries(client, s)).halt).halted:
            raise RuntimeError(f"the network is halted (epoch {halt.epoch}: {halt.reason}); guardians resume it "
                               f"with `westworld halt resume` before the demo can run")
        sandbox = LocalSandbox(http, s.data_dir, s.prometheus_targets_dir, namespaces=s.sandbox_namespaces)
        echo("provisioning 3 real mesh nodes (local sandbox)...")
        ref = await sandbox.provision(ProvisionInput(
            backend=Backend.LOCAL, sandbox_id=f"capdemo-{tag}", arm=Arm.BASELINE,
            workload=Workload(version="1.4.0", nodes=3)), lambda _m: None)
        try:
            await _demo(client, s, signers, ref, http, echo, tag)
        finally:
            await sandbox.teardown(ref)
            # What this run registered for its own sandbox goes with it, so the live count stays true.
            await signers.admin(AdminChange(action=AdminAction.REMOVE_NODES, node_ids=[n.id for n in ref.nodes]))
            echo(f"removed sandbox capdemo-{tag} and deregistered its {len(ref.nodes)} nodes")


async def _demo(client: Client, s: Settings, signers: Signers, ref: SandboxRef, http: HttpClient,
                echo: Echo, tag: str) -> None:
    peer_keys, guardian_keys = await _register(s, signers, ref)
    live = len((await ops.registries(client, s)).nodes)
    real = [n.id for n in ref.nodes]
    target = MeshTarget(nodes=ref.nodes)
    echo(f"network: {live} registered nodes ({len(real)} real: {', '.join(real)}), {len(peer_keys)} peers, "
         f"{len(guardian_keys)} guardians")

    echo("\n1. a narrow token is refused a wide action")
    narrow = cap.attenuate(await signers.mint(f"router-{tag}", ["set_version"]),
                           ["affects_nodes_le = 1", "affects_network_pct_le = 1.0"])
    echo("   token caveats: " + "; ".join(line.strip() for line in ops.inspect(narrow)[5:]))
    await _act(client, s, echo, AgentActionInput(agent_id=f"router-{tag}", action_id="wide-1", token=narrow,
                                                 action=MeshAction.SET_VERSION, node_ids=real, version="1.5.0",
                                                 target=target))

    echo("\n2. a wide action passes only with k=3 peer signatures")
    rollout = await signers.mint(f"rollout-{tag}", ["set_version"])
    inp = AgentActionInput(agent_id=f"rollout-{tag}", action_id="upgrade-1", token=rollout,
                           action=MeshAction.SET_VERSION, node_ids=real, version="1.5.0", target=target,
                           peers_required=3)
    wid = await start_sealed_action(client, s, inp, inp.token)  # sealed to the workers for this action
    handle = client.get_workflow_handle(wid)
    while (status := await handle.query(AgentActionWorkflow.status)).step != "awaiting peer signatures":
        if status.step == "done":
            break
        await asyncio.sleep(0.2)
    echo(f"   {wid}: wide ({len(real)} of {live} nodes > 1%), waiting for 3 peers over digest {status.digest[:16]}…")
    ids = sorted(peer_keys)
    try:
        await ops.sign_action(client, wid, ids[0], peer_keys[ids[1]])
    except Exception as err:
        echo(f"   forged signature for {ids[0]}: {err}")
    for pid in ids[:3]:
        n = await ops.sign_action(client, wid, pid, peer_keys[pid])
        echo(f"   {pid} signed ({n}/3)")
    echo("   -> " + ops.describe(await ops.await_action(client, wid)))
    versions = {n.id: (await http.get(f"{n.admin_url}/status")).json()["version"] for n in ref.nodes}
    echo(f"   node versions now: {versions}")

    echo("\n3. a creeping takeover: 2 nodes at a time, each step narrow")
    echo(f"   anomaly watch ({WATCH_ID}): {await standing.ensure_watch(client, s, AnomalyWatchInput())}")
    before = await ops.reconfigure_watch(client, WATCH, WATCH_REASON, [signers.operator])
    echo(f"   reconfigured for the demo (operator-signed, audited): creep critical at "
         f"{before.config.concentration_critical_pct:g}% "
         f"-> {WATCH.config.concentration_critical_pct:g}% of the network, poll "
         f"{before.poll_interval.total_seconds():g} s -> {WATCH.poll_interval.total_seconds():g} s")
    try:
        await _creep(client, s, signers, echo, tag, rollout, real, target, guardian_keys)
    finally:
        await ops.reconfigure_watch(client, before, "capabilities demo over: the watch's previous settings restored",
                                    list(guardian_keys.values()))
        echo(f"   anomaly watch settings restored, signed by {len(guardian_keys)} guardians (creep critical at "
             f"{before.config.concentration_critical_pct:g}%, "
             f"poll {before.poll_interval.total_seconds():g} s)")
    echo("\nevery decision above is in the audit log: `westworld audit show --last 20`")


async def _creep(client: Client, s: Settings, signers: Signers, echo: Echo, tag: str, rollout: str,
                 real: list[str], target: MeshTarget, guardian_keys: dict[str, bytes]) -> None:
    creeper = await signers.mint(f"creeper-{tag}", ["set_config"])
    sims = [f"sim-{i:03d}" for i in range(SIMULATED)]
    halted = False
    for step in range(60):
        caveat = await _act(client, s, echo, AgentActionInput(
            agent_id=f"creeper-{tag}", action_id=f"creep-{step}", token=creeper, action=MeshAction.SET_CONFIG,
            node_ids=sims[2 * step:2 * step + 2], config={"route": "via-creeper"}))
        if caveat == cap.HALTED:
            halted = True
            break
        await asyncio.sleep(0.5)
    if not halted:
        raise RuntimeError("the anomaly watch did not halt the network within 60 steps (is the worker running?)")
    state = (await ops.registries(client, s)).halt
    echo(f"   NETWORK HALTED (epoch {state.epoch}): {state.reason}")
    watch = await client.get_workflow_handle(WATCH_ID).query(
        AnomalyWatchWorkflow.status)
    for f in watch.findings[:3]:
        echo(f"   finding: {f.severity.value} {f.kind}: {'; '.join(f.reasons)}")
    await _act(client, s, echo, AgentActionInput(agent_id=f"rollout-{tag}", action_id="after-halt", token=rollout,
                                                 action=MeshAction.SET_VERSION, node_ids=real[:1], version="1.4.0"))

    echo("   guardians resume (2 of 3):")
    gids = sorted(guardian_keys)
    try:
        await ops.sign_resume(client, state.epoch, gids[0], guardian_keys[gids[2]])
    except Exception as err:
        echo(f"   forged guardian signature: {err}")
    for gid in gids[:2]:
        n = await ops.sign_resume(client, state.epoch, gid, guardian_keys[gid])
        echo(f"   {gid} signed ({n}/2)")
    while (await ops.registries(client, s)).halt.halted:
        await asyncio.sleep(0.2)
    echo("   resumed; checks run again:")
    await _act(client, s, echo, AgentActionInput(agent_id=f"rollout-{tag}", action_id="after-resume", token=rollout,
                                                 action=MeshAction.SET_VERSION, node_ids=real[:1], version="1.4.0",
                                                 target=target))
