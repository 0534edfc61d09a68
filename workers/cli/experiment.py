"""`westworld experiment validate | start | status | abort` and `westworld experiment rollout start | status | pause |
resume | promote | abort`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from westworld.documents import parse_document
from westworld.errors import InvalidInput, NotConfigured
from westworld.experiment import ExperimentSpec, format_duration, parse_spec_document
from westworld.experiment_run import ExperimentInput, ExperimentResult, ExperimentStatus
from westworld.keys import canary_id, experiment_id
from westworld.rollout import CanaryInput, CanaryStatus, PromoteRequest
from westworld.sealed import is_sealed
from workers.cli.agent_common import directory, seal_input, token_arg
from workers.cli.common import DataDir, fail, fail_for, settings_for
from workers.cli.inputs import load_model, read_input
from workers.cli.output import Json, emit_json
from workers.client import connect
from workers.settings import Settings
from workflows.canary import CanaryRolloutWorkflow
from workflows.experiment import ExperimentWorkflow

Echo = Callable[[str], None]
experiment_app = typer.Typer(help="Experiments: sandbox under chaos, judged, voted on, rolled out.",
                             no_args_is_help=True)
rollout_app = typer.Typer(help="Canary rollouts: status, pause, resume, promote, abort.", no_args_is_help=True)
experiment_app.add_typer(rollout_app, name="rollout")
Watch = Annotated[bool, typer.Option("--watch", "-w", help="Refresh until the workflow ends.")]
Token = Annotated[str | None, typer.Option("--token", help="The capability token (or a file holding it) of the "
                                                           "rollout's agent, spec.rollout.agent.")]


def read_spec(file: Path) -> tuple[ExperimentSpec, dict[str, Any]]:
    """The validated spec and the data as written (read once, by the safe loader). Raises InvalidInput naming
    the file."""
    doc = parse_document(read_input(file), str(file))
    try:
        spec = parse_spec_document(doc)
    except InvalidInput as err:
        raise InvalidInput(f"{file}: {err.message}") from err
    return spec, doc.data


async def start_experiment(client: Client, s: Settings, data: dict[str, Any], name: str,
                           capability_token: str | None = None) -> str:
    """Start ``ExperimentWorkflow`` on the spec's data; ``capability_token`` is the token of the rollout's agent
    (``spec.rollout.agent``), passed beside the spec, never in it, and sealed here to the workers for this
    experiment and input (westworld/sealed.py): the token itself never enters workflow history."""
    inp = ExperimentInput(spec=data, rollout_capability_token=capability_token)
    if capability_token is not None and not is_sealed(capability_token):
        inp = seal_input(inp, "rollout_capability_token", capability_token, await directory(client, s),
                         "ExperimentWorkflow", experiment_id(name))
    handle = await client.start_workflow(
        ExperimentWorkflow.run, inp,
        id=experiment_id(name), task_queue=s.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    return handle.id


def progress_bar(fraction: float, width: int = 30) -> str:
    fraction = max(0.0, min(1.0, fraction))
    done = round(fraction * width)
    return f"[{'#' * done}{'-' * (width - done)}] {fraction:>4.0%}"


def render_status(st: ExperimentStatus, s: Settings, closed: str | None = None) -> list[str]:
    lines = [f"experiment {st.name}: {st.phase.value}" + (f" ({closed})" if closed else ""),
             f"  run      {progress_bar(st.progress)}  {format_duration(st.elapsed)} of "
             f"{format_duration(st.duration)}"]
    for metric, arms in sorted(st.live.items()):
        values = "  ".join(f"{arm} {_fmt(v)}" for arm, v in sorted(arms.items()))
        lines.append(f"  {metric:<28} {values}")
    applied = [e for e in st.chaos if e.action == "applied"]
    if st.chaos:
        lines.append(f"  chaos    {len(applied)} fault application(s), {sum(e.action == 'failed' for e in st.chaos)} "
                     f"failed; mode: {st.chaos[0].mode}")
    if st.verdict:
        lines.append(f"  verdict  {st.verdict.upper()} (score {st.score:.1f})")
        lines += [f"    - {r}" for r in st.reasons]
    if st.evidence:
        lines.append(f"  evidence {st.evidence.path} (sha256 {st.evidence.hash[:16]}…)")
    if st.vote_workflow_id:
        lines.append(f"  vote     {st.vote_workflow_id}" + (f": {st.vote_decision}" if st.vote_decision else
                                                           " (cast ballots with `westworld vote cast`)"))
    if st.rollout_workflow_id:
        lines.append(f"  rollout  {st.rollout_workflow_id} (`westworld experiment rollout status {st.name}`)")
    lines.append(f"  UI       {ui_url(s, experiment_id(st.name))}")
    return lines


def render_rollout(st: CanaryStatus, s: Settings, closed: str | None = None) -> list[str]:
    total = st.total_nodes or 1
    label = st.steps[st.step].label if 0 <= st.step < len(st.steps) else "-"
    lines = [f"rollout {st.name}: {st.phase.value}" + (f" ({closed})" if closed else "")
             + (f" — PAUSED: {st.pause_reason}" if st.paused else ""),
             f"  version  {st.version} on {st.on_new_version} of {st.total_nodes} node(s) "
             f"{progress_bar(st.on_new_version / total)}",
             f"  step     {st.step + 1} of {len(st.steps)} ({label}); analysis every "
             f"{format_duration(st.analysis_interval)}"]
    for m in st.last_measurements:
        verdict = {True: "ok", False: "FAIL", None: "no data"}[m.ok]
        lines.append(f"  {m.metric:<28} canary {_fmt(m.canary)}  stable {_fmt(m.stable)}  {verdict}")
    for rec in st.history:
        lines.append(f"  step {rec.label:>5} ({rec.nodes} nodes) at {rec.applied_at:%H:%M:%S}: {rec.decision or '…'}")
    lines += [f"    - {r}" for r in st.reasons]
    lines.append(f"  UI       {ui_url(s, canary_id(st.name))}")
    return lines


def ui_url(s: Settings, workflow_id: str) -> str:
    return f"http://127.0.0.1:{s.temporal_ui_port}/namespaces/{s.temporal_namespace}/workflows/{workflow_id}"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


async def _client(s: Settings) -> Client:
    try:
        return await connect(s)
    except NotConfigured as err:
        raise fail_for(err) from err


async def _show(s: Settings, workflow_id: str, query: Any, render: Any, watch: bool, echo: Echo,
                as_json: bool = False) -> None:
    client = await _client(s)
    handle = client.get_workflow_handle(workflow_id)
    while True:
        try:
            desc = await handle.describe()
            st = await handle.query(query)
        except RPCError as err:
            raise fail(f"{workflow_id}: {err.message}") from err
        running = desc.status == WorkflowExecutionStatus.RUNNING
        closed = None if running else (desc.status.name.lower() if desc.status else "closed")
        if as_json:  # one document: the state now (--watch is for people)
            emit_json({"workflow_id": workflow_id, "running": running, "closed": closed, "status": st})
            return
        echo("\n".join(render(st, s, closed)))
        if not watch or not running:
            return
        await asyncio.sleep(2)
        echo("")


@experiment_app.command("validate")
def validate(file: Path) -> None:
    """Check a spec; every problem is listed with its path (and line)."""
    try:
        spec, _ = read_spec(file)
    except InvalidInput as err:
        raise fail(err.message) from err
    s = spec.spec
    rollout = "none"
    if s.rollout is not None:
        rollout = "planned" + (f" as agent {s.rollout.agent!r}" if s.rollout.agent else "")
    typer.echo(f"{file}: OK — {spec.name}: {s.workload.version} vs {s.baseline.version}, {s.workload.nodes} node(s) "
               f"per arm for {format_duration(s.duration)}, {len(s.chaos)} fault(s), {len(s.metrics)} metric(s), "
               f"vote {'required' if s.dao_vote_required else 'not required'}, "
               f"rollout {rollout}; spec sha256 {spec.spec_hash()[:16]}…")


@experiment_app.command("start")
def start(file: Path, token: Token = None, data_dir: DataDir = None) -> None:
    """Validate a spec and start its ExperimentWorkflow (id experiment:<name>)."""
    s = settings_for(data_dir)
    capability = token_arg(token, "--token") if token else None
    try:
        spec, data = read_spec(file)
    except InvalidInput as err:
        raise fail(err.message) from err
    try:  # an agent without its token (or the reverse) fails here, not after the run
        ExperimentInput(spec=data, rollout_capability_token=capability).rollout_agent(spec)
    except InvalidInput as err:
        raise fail(f"{file}: {err.message}") from err

    async def go() -> str:
        client = await _client(s)
        try:
            return await start_experiment(client, s, data, spec.name, capability)
        except WorkflowAlreadyStartedError as err:
            raise fail(f"experiment {spec.name!r} already exists ({experiment_id(spec.name)})") from err

    wf_id = asyncio.run(go())
    typer.echo(f"started {wf_id}: {format_duration(spec.spec.duration)} run; follow it with "
               f"`westworld experiment status {spec.name} --watch` or at {ui_url(s, wf_id)}")


@experiment_app.command("status")
def status(name: str, watch: Watch = False, as_json: Json = False, data_dir: DataDir = None) -> None:
    """Phase, progress bar, live metrics, chaos, verdict, evidence, vote and rollout of an experiment."""
    asyncio.run(_show(settings_for(data_dir), experiment_id(name), ExperimentWorkflow.status, render_status, watch,
                      typer.echo, as_json))


@experiment_app.command("abort")
def abort(name: str, data_dir: DataDir = None) -> None:
    """Stop an experiment's run now; its sandboxes are torn down and nothing is rolled out."""
    asyncio.run(_signal(settings_for(data_dir), experiment_id(name), ExperimentWorkflow.abort, None))
    typer.echo(f"abort sent to {experiment_id(name)}")


async def _signal(s: Settings, workflow_id: str, signal: Any, arg: Any) -> None:
    client = await _client(s)
    handle = client.get_workflow_handle(workflow_id)
    try:
        if arg is None:
            await handle.signal(signal)
        else:
            await handle.signal(signal, arg)
    except RPCError as err:
        raise fail(f"{workflow_id}: {err.message}") from err


@rollout_app.command("start")
def rollout_start(file: Path, data_dir: DataDir = None) -> None:
    """Start a CanaryRolloutWorkflow directly from a CanaryInput file (an operator's rollout without experiment).
    A ``capability_token`` given in clear in the file is sealed here for this rollout and input before it starts
    (it never enters workflow history)."""
    s = settings_for(data_dir)
    try:
        inp = load_model(file, CanaryInput)
    except InvalidInput as err:
        raise fail(str(err)) from err

    async def go() -> str:
        client = await _client(s)
        start = inp
        if inp.capability_token is not None and not is_sealed(inp.capability_token):
            start = seal_input(inp, "capability_token", inp.capability_token, await directory(client, s),
                               "CanaryRolloutWorkflow", canary_id(inp.name))
        try:
            handle = await client.start_workflow(CanaryRolloutWorkflow.run, start, id=canary_id(inp.name),
                                                 task_queue=s.task_queue)
        except WorkflowAlreadyStartedError as err:
            raise fail(f"rollout {inp.name!r} already exists ({canary_id(inp.name)})") from err
        return handle.id

    typer.echo(f"started {asyncio.run(go())}; follow it with `westworld experiment rollout status {inp.name} -w`")


@rollout_app.command("status")
def rollout_status(name: str, watch: Watch = False, as_json: Json = False, data_dir: DataDir = None) -> None:
    """Step, nodes on the new version, last analysis, history of a canary rollout."""
    asyncio.run(_show(settings_for(data_dir), canary_id(name), CanaryRolloutWorkflow.status, render_rollout, watch,
                      typer.echo, as_json))


@rollout_app.command("pause")
def rollout_pause(name: str, data_dir: DataDir = None) -> None:
    """Hold the rollout after the current step's bake (analysis, and automatic rollback, go on)."""
    asyncio.run(_signal(settings_for(data_dir), canary_id(name), CanaryRolloutWorkflow.pause, None))
    typer.echo(f"pause sent to {canary_id(name)}")


@rollout_app.command("resume")
def rollout_resume(name: str, data_dir: DataDir = None) -> None:
    """Continue a paused rollout (a step paused as inconclusive is accepted)."""
    asyncio.run(_signal(settings_for(data_dir), canary_id(name), CanaryRolloutWorkflow.resume, None))
    typer.echo(f"resume sent to {canary_id(name)}")


@rollout_app.command("promote")
def rollout_promote(name: str, full: Annotated[bool, typer.Option("--full", help="Go straight to every node.")] = False,
                    data_dir: DataDir = None) -> None:
    """Skip the current bake (or, with --full, every remaining step)."""
    asyncio.run(_signal(settings_for(data_dir), canary_id(name), CanaryRolloutWorkflow.promote,
                        PromoteRequest(full=full)))
    typer.echo(f"promote{' --full' if full else ''} sent to {canary_id(name)}")


@rollout_app.command("abort")
def rollout_abort(name: str, data_dir: DataDir = None) -> None:
    """Roll every moved node back to its previous version and stop."""
    asyncio.run(_signal(settings_for(data_dir), canary_id(name), CanaryRolloutWorkflow.abort, None))
    typer.echo(f"abort sent to {canary_id(name)}")


__all__ = ["ExperimentResult", "experiment_app", "render_rollout", "render_status", "start_experiment"]
