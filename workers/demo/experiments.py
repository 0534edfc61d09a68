"""The experiments part of `westworld demo`: on the local backend, against the stack `westworld up` started.

1. A good build (mesh-node 1.4.0) and a faulty one (1.5.0-rc1) are each tried for 30 s in sandboxes of three
   mesh-node processes per arm (baseline 1.3.0), under latency and packet-loss chaos, measured in Prometheus and
   judged. The good one passes, its evidence is stored and hashed into the audit log, the DAO votes on it (the demo
   voters' signed ballots close the vote early), and it is rolled out as a canary over a 20-node local mesh,
   1% -> 5% -> 25% -> 50% -> 100% (bakes shortened to 6 s for the demo). Each step runs as the spec's rollout
   agent (``spec.rollout.agent``, its token minted here and passed at start), capped at 10 nodes per action; the
   spec's peer policy makes the wider steps need peer signatures, and two demo peers sign them. The faulty one
   fails the judge: no vote, no rollout.
2. To show the automatic rollback, an operator then overrides the judge and rolls the faulty build out directly
   (a CanaryRolloutWorkflow without an experiment, also as a capability-bounded agent): its canary node's relay
   errors break the analysis at the first step and the node is put back on its previous version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from westworld import capability as cap
from westworld import peers
from westworld.agents import AdminAction, AdminChange
from westworld.amounts import format_tokens
from westworld.errors import InvalidInput
from westworld.experiment import ExperimentSpec, format_duration, load_spec
from westworld.experiment_run import ExperimentResult, ExperimentStatus, Phase
from westworld.keys import agent_action_id, canary_id, canary_step_workflow_id, experiment_id, proposal_of
from westworld.rollout import CanaryInput, CanaryResult, CanaryStatus, RolloutPhase
from workers.cli import agent_ops
from workers.cli.agent_common import directory, seal_input
from workers.cli.experiment import progress_bar, start_experiment, ui_url
from workers.cli.vote import explain_refusal, submit_vote
from workers.client import connect
from workers.demo.voters import Signers, demo_key, demo_voters
from workers.settings import Settings
from workflows.agent_action import AgentActionWorkflow
from workflows.canary import CanaryRolloutWorkflow
from workflows.experiment import ExperimentWorkflow

Echo = Callable[[str], None]
SPECS = Path(__file__).resolve().parents[2] / "deploy" / "experiments"
DEMO_BAKE = {"bake_time": "6s", "analysis_interval": "2s"}
BALLOTS = (("voter-1", "for"), ("voter-2", "for"), ("voter-3", "against"))
# The approved rollout's agent: at most 10 nodes per action (the 100% step adds 10 of 20). When a step is wide and
# how many peers sign it is the network policy's (deploy/policy.yaml: more than 20 nodes or 1% of the registered
# nodes, k = 3); the spec may only ask stricter, and asks "wide from 6 nodes" and a 2-minute wait. The demo's three
# peers sign each wide step. What the peers endorse is left out of the anomaly watch's coverage, so the agent's own
# reach stays well under what would halt the network.
ROLLOUT_CAP = 10
PEER_POLICY = {"wide_nodes": 5, "wait": "2m"}
DEMO_PEERS = ("demo-peer-0", "demo-peer-1", "demo-peer-2")  # the capabilities demo's first three peers (same keys)


def demo_spec(file: str, suffix: str, **rollout: Any) -> tuple[ExperimentSpec, dict[str, Any]]:
    """A shipped example spec with a unique name, the demo's short bakes and ``rollout`` fields."""
    data = yaml.safe_load((SPECS / file).read_text())
    data["metadata"]["name"] = f"{data['metadata']['name']}-{suffix}"[:40].rstrip("-")
    data["spec"]["rollout"].update(DEMO_BAKE, **rollout)
    return load_spec(yaml.safe_dump(data)), data


async def run_experiments_demo(s: Settings, echo: Echo) -> None:
    client = await connect(s)
    if (halt := (await agent_ops.registries(client, s)).halt).halted:  # every rollout step would be refused
        raise RuntimeError(f"the network is halted (epoch {halt.epoch}: {halt.reason}); guardians resume it with "
                           "`westworld halt resume` before the demo can run")
    suffix = f"{int(time.time()) % 100000}"
    agent = f"cradle-rollout-{suffix}"  # one agent per run: the anomaly watch judges each agent's own history
    good, good_data = demo_spec("good.yaml", suffix, agent=agent, peer_policy=PEER_POLICY)
    faulty, faulty_data = demo_spec("faulty.yaml", suffix)
    echo(f"E1. experiments {good.name} (1.4.0) and {faulty.name} (1.5.0-rc1), each vs baseline 1.3.0 on "
         f"{good.spec.workload.nodes}+{good.spec.workload.nodes} local mesh nodes for "
         f"{format_duration(good.spec.duration)} under {len(good.spec.chaos)} faults")
    token = await _token(client, s, agent, [f"affects_nodes_le = {ROLLOUT_CAP}"])
    peer_keys = await _peer_keys(client, s)
    good_id = await start_experiment(client, s, good_data, good.name, capability_token=token)
    faulty_id = await start_experiment(client, s, faulty_data, faulty.name)
    good_h = client.get_workflow_handle(good_id, result_type=ExperimentResult)
    faulty_h = client.get_workflow_handle(faulty_id, result_type=ExperimentResult)
    await _follow_run(good_h, echo)
    voting = await _wait_phase(good_h, {Phase.VOTING, Phase.DONE})
    _show_verdict(voting, echo)
    if voting.verdict == "invalid":  # a fault did not run as specified (e.g. the worker was down): run it again
        echo(f"E2. {good.name} is INVALID, not judged nor voted on: {'; '.join(voting.reasons[1:3])}; running it "
             "again")
        good, good_data = demo_spec("good.yaml", f"{suffix}-again", agent=agent, peer_policy=PEER_POLICY)
        token = await _token(client, s, agent, [f"affects_nodes_le = {ROLLOUT_CAP}"])
        good_id = await start_experiment(client, s, good_data, good.name, capability_token=token)
        good_h = client.get_workflow_handle(good_id, result_type=ExperimentResult)
        await _follow_run(good_h, echo)
        voting = await _wait_phase(good_h, {Phase.VOTING, Phase.DONE})
        _show_verdict(voting, echo)
    if voting.vote_workflow_id:
        await _vote(client, s, voting, echo)
    await _follow_rollout(client, good, peer_keys, echo)
    try:
        good_result = await good_h.result()
    except WorkflowFailureError as err:
        echo(f"E4. {good.name} failed after its verdict: {_root_cause(err)} (see {ui_url(s, good_id)})")
        raise
    faulty_result = await faulty_h.result()
    verdict, score = (faulty_result.verdict or "?").upper(), faulty_result.score or 0
    echo(f"E5. {faulty.name}: {verdict} (score {score:.1f}) — not put to a vote, not rolled out:")
    for r in faulty_result.reasons[:4]:
        echo(f"      - {r}")
    override = await _override(client, s, suffix, peer_keys, echo)
    _where(s, good_result, faulty_result, override, good_id, faulty_id, echo)
    outcomes = (good_result.rollout.outcome if good_result.rollout else None, override.outcome)
    if outcomes != (RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK):  # what the demo shows, or it fails
        why = (good_result.rollout.reasons if good_result.rollout else good_result.reasons)[:2]
        raise RuntimeError(f"the approved rollout ended {outcomes[0] or 'without a rollout'} ({'; '.join(why)}) "
                           f"and the override {outcomes[1]}: expected promoted and rolled back")


async def _follow_run(handle: WorkflowHandle[ExperimentWorkflow, ExperimentResult], echo: Echo) -> None:
    last = -1.0
    while True:
        st = await handle.query(ExperimentWorkflow.status)
        if st.phase not in {Phase.VALIDATING, Phase.PROVISIONING, Phase.RUNNING}:
            return
        if st.phase is Phase.RUNNING and st.progress - last >= 0.24:
            last = st.progress
            live = ", ".join(f"{m} {arms.get('baseline', 0) or 0:.3g}/{arms.get('treatment', 0) or 0:.3g}"
                             for m, arms in sorted(st.live.items()))
            echo(f"    {progress_bar(st.progress, 20)} baseline/treatment: {live or 'waiting for the first samples'}")
        await asyncio.sleep(1)


async def _wait_phase(handle: WorkflowHandle[ExperimentWorkflow, ExperimentResult], phases: set[Phase],
                      timeout: float = 180) -> ExperimentStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await handle.query(ExperimentWorkflow.status)
        if st.phase in phases or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.5)


def _show_verdict(st: ExperimentStatus, echo: Echo) -> None:
    echo(f"E2. {st.name}: {(st.verdict or '?').upper()} (score {st.score or 0:.1f}); sandboxes torn down; evidence "
         f"{st.evidence.path if st.evidence else '?'} ({', '.join(st.evidence.files) if st.evidence else ''})")
    for e in st.chaos:
        if e.arm == "treatment":
            echo(f"      chaos at {e.offset_s:5.1f}s: {e.kind} {e.action} on {', '.join(e.nodes)} ({e.mode})")


async def _vote(client: Client, s: Settings, st: ExperimentStatus, echo: Echo) -> None:
    assert st.vote_workflow_id is not None
    pid = proposal_of(st.vote_workflow_id)
    echo(f"E3. DAO vote {st.vote_workflow_id} (72 h window, evidence linked); signed ballots:")
    voters = demo_voters(s.data_dir / "demo-keys")
    for _ in range(50):  # the child vote opens a moment after the evidence is stored
        if (await client.get_workflow_handle(st.vote_workflow_id).describe()).status is not None:
            break
        await asyncio.sleep(0.2)
    for name, choice in BALLOTS:
        for attempt in range(25):
            try:
                r = await submit_vote(client, s, pid, choice, voters[name].key.hex(), reason="demo: cradle evidence")
                echo(f"      {name} {choice:8} weight {format_tokens(r.weight):>12}  accepted")
                break
            except (WorkflowUpdateFailedError, ApplicationError) as err:
                if isinstance(err, WorkflowUpdateFailedError) or err.non_retryable:  # refused (update or intake)
                    echo(f"      {name} {choice:8} {explain_refusal(err)}")
                    break
                if attempt == 24:  # the vote is still opening (no ballot context yet)
                    echo(f"      {name} {choice:8} not sent: {err}")
                await asyncio.sleep(0.3)
            except Exception as err:  # the vote is still opening (no ballot context yet)
                if attempt == 24:
                    echo(f"      {name} {choice:8} not sent: {err}")
                await asyncio.sleep(0.3)


async def _follow_rollout(client: Client, spec: ExperimentSpec, peer_keys: dict[str, bytes], echo: Echo) -> None:
    plan, name = spec.spec.rollout, spec.name
    assert plan is not None and plan.agent is not None and plan.peer_policy is not None
    handle = client.get_workflow_handle(canary_id(name), result_type=CanaryResult)
    exp = client.get_workflow_handle(experiment_id(name), result_type=ExperimentResult)
    st = await _wait_phase(exp, {Phase.ROLLING_OUT, Phase.DONE})
    if st.phase is not Phase.ROLLING_OUT:
        echo(f"E4. no rollout (vote: {st.vote_decision})")
        return
    policy = plan.peer_policy
    echo(f"E4. vote {st.vote_decision}: canary rollout {canary_id(name)} over a 20-node local mesh")
    echo(f"      each step runs as agent {plan.agent!r} (AgentActionWorkflow {agent_action_id(plan.agent, '...')}) "
         "under a "
         f"token capped at {ROLLOUT_CAP} nodes per action (sealed to the workers, never in history); a step over "
         f"{policy.wide_nodes} nodes (the spec, stricter than the policy) or the network policy's share of the "
         f"registered nodes needs the policy's k = 3 peer signatures:")
    agent, signed = plan.agent, set[int]()
    await _print_steps(handle, echo, lambda now: _endorse(client, now, agent, peer_keys, signed, echo))


async def _print_steps(handle: WorkflowHandle[CanaryRolloutWorkflow, CanaryResult], echo: Echo,
                       after: Callable[[CanaryStatus], Awaitable[None]] | None = None) -> CanaryResult:
    """Print each step as it is applied and decided (then run ``after`` on the status) until the rollout ends."""
    seen: set[tuple[int, str]] = set()
    while True:
        try:
            st = await handle.query(CanaryRolloutWorkflow.status)
        except Exception:  # the child has not started yet
            await asyncio.sleep(0.5)
            continue
        for rec in st.history:
            why = ": " + "; ".join(rec.reasons) if rec.decision == "rollback" else ""
            applied = f"      step {rec.label:>4}: {rec.nodes:2} of {st.total_nodes} node(s) on {st.version}"
            decided = f"      step {rec.label:>4}: analysis -> {rec.decision}{why}"
            for key, line in (((rec.index, "applied"), applied), ((rec.index, rec.decision), decided)):
                if key[1] and key not in seen:
                    seen.add(key)
                    echo(line)
        if st.phase in {RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED}:
            echo(f"      -> {st.phase.value.upper()} ({st.on_new_version} of {st.total_nodes} node(s) on {st.version})")
            return await handle.result()
        if after is not None:
            await after(st)
        await asyncio.sleep(0.5)


async def _endorse(client: Client, st: CanaryStatus, agent: str, keys: dict[str, bytes], signed: set[int],
                   echo: Echo) -> None:
    """As the demo's peers, sign the rollout's current step if its agent action waits for peer signatures."""
    if st.step < 0 or st.step in signed:
        return
    wid = canary_step_workflow_id(agent, st.name, st.step)
    try:
        action = await client.get_workflow_handle(wid).query(AgentActionWorkflow.status)
    except RPCError:  # this step's action has not started yet
        return
    if action.step != "awaiting peer signatures":
        return
    signed.add(st.step)
    step, signers = st.steps[st.step], sorted(keys)[:action.peers_required]
    try:
        for signer in signers:
            await agent_ops.sign_action(client, wid, signer, keys[signer])
        echo(f"      step {step.label:>4}: wide ({len(step.added)} nodes in one action), signed by peers "
             f"{', '.join(signers)}")
    except InvalidInput as err:  # the step is then denied when its wait ends, and the rollout rolls back
        echo(f"      step {step.label:>4}: wide, but {err.message}")


async def _peer_keys(client: Client, s: Settings) -> dict[str, bytes]:
    """The demo peers (key files made on first use, the capabilities demo's), registered with their public keys
    by a signed admin change where they are not yet: the demo is a client and opens no database."""
    signers = Signers(s, client)
    known = (await agent_ops.registries(client, s)).peers
    keys: dict[str, bytes] = {}
    for pid in DEMO_PEERS:
        keys[pid] = demo_key(s, pid)
        if known.get(pid) != peers.public_key_of(keys[pid]):
            await signers.admin(AdminChange(action=AdminAction.ADD_PEER, subject=pid, region="sim",
                                            public_key=peers.public_key_of(keys[pid])))
    return keys


async def _override(client: Client, s: Settings, suffix: str, peer_keys: dict[str, bytes], echo: Echo) -> CanaryResult:
    spec = load_spec((SPECS / "faulty.yaml").read_text())
    assert spec.spec.rollout is not None
    names = set(spec.spec.rollout.metrics)
    agent = f"operator-override-{suffix}"  # per run, like the rollout's: the watch judges each agent's history
    token = await _token(client, s, agent, ["affects_nodes_le = 5"])
    inp = CanaryInput(name=f"override-1-5-0-rc1-{suffix}", version="1.5.0-rc1", mesh_nodes=20, mesh_version="1.4.0",
                      steps=spec.spec.rollout.steps, bake_time=timedelta(seconds=6),
                      analysis_interval=timedelta(seconds=2),
                      metrics=[m for m in spec.spec.metrics if m.name in names],
                      agent_id=agent, capability_token=token)
    inp = seal_input(inp, "capability_token", token, await directory(client, s), "CanaryRolloutWorkflow",
                     canary_id(inp.name))
    echo(f"E6. operator override: the faulty 1.5.0-rc1 rolled out directly (no experiment, no vote) as "
         f"{canary_id(inp.name)} over a fresh 20-node mesh on 1.4.0 — the canary analysis must catch it.")
    echo(f"      each step runs as agent {agent!r} (AgentActionWorkflow agent-action:{agent}:...) under a token "
         f"capped at 5 nodes per action; a wide step (the network policy's rule) is signed by the demo's 3 peers:")
    handle = await client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                         task_queue=s.task_queue)
    signed = set[int]()  # a step over the policy's share of the registered nodes is wide: the demo's peers sign it
    result = await _print_steps(handle, echo, lambda now: _endorse(client, now, agent, peer_keys, signed, echo))
    st = result.status
    if st.step_applied_at and st.rollback_started_at:
        took = st.rollback_started_at - st.step_applied_at
        echo(f"      first step live -> rollback started: {took.total_seconds():.1f}s "
             f"({took / inp.analysis_interval:.1f} analysis interval(s)); restored: "
             f"{', '.join(result.rolled_back_nodes)} back on their previous version")
    return result


async def _token(client: Client, s: Settings, agent: str, caveats: list[str]) -> str:
    """A capability for ``agent``: set_version only, narrowed by ``caveats``; minted by the worker on the
    operator's signed request (a root key made first if there is none)."""
    signers = Signers(s, client)
    if not (await agent_ops.registries(client, s)).active_key:
        await signers.admin(AdminChange(action=AdminAction.ROTATE_KEY))
    return cap.attenuate(await signers.mint(agent, ["set_version"]), caveats)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)


def _where(s: Settings, good: ExperimentResult, faulty: ExperimentResult, override: CanaryResult, good_id: str,
           faulty_id: str, echo: Echo) -> None:
    echo("E7. where to see them:")
    echo(f"      good experiment  {ui_url(s, good_id)}")
    if good.rollout is not None:
        echo(f"      its rollout      {ui_url(s, canary_id(good.name))}  ({good.rollout.outcome.value})")
    echo(f"      faulty experiment {ui_url(s, faulty_id)}")
    echo(f"      override rollout {ui_url(s, canary_id(override.name))}  ({override.outcome.value})")
    for r in (good, faulty):
        if r.evidence:
            echo(f"      evidence         {r.evidence.path}")
    echo(f"      CLI: westworld experiment status {good.name}; westworld experiment rollout status {override.name}; "
         "westworld audit show")
