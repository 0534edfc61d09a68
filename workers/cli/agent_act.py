"""`westworld agent act | seal | discharge | attenuate | inspect`: what an agent and its peers do with a token.

A token is a credential: these commands take it inline or from a file (a value that is not an existing file is
the token itself), never print it in an error, and never put it in a workflow input in clear — `act` seals it to
the workers for the one action it starts (westworld/sealed.py), `seal` does the same for a start input pasted into
the Temporal UI. Exit codes of `act` (workers/cli/common.py): 0 allowed (or started with --no-wait), 1 refused or
failed (bad input, a looser peer request than the network policy, a token not sealed), 2 usage, 3 the stack does
not answer, 4 denied by the capability check or for want of peer signatures (the caveat named).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from westworld import capability as cap
from westworld import discharge as dc
from westworld.agents import AgentActionInput, AgentActionResult
from westworld.errors import Denial, WestworldError
from westworld.sandbox import MeshAction, MeshTarget
from workers.cli import agent_ops as ops
from workers.cli.agent_common import (
    EXIT_DENIED,
    SEALABLE,
    attenuate_token,
    client,
    directory,
    emit,
    result_or_refusal,
    run,
    safe_errors,
    sealed_input_json,
    start_sealed_action,
    token_arg,
)
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.output import Json, emit_json

TokenArg = Annotated[str, typer.Argument(help="The token, or a file holding it.")]
Out = Annotated[Path | None, typer.Option("--out", help="Write the token to this file (mode 0600).")]
Nodes = Annotated[str, typer.Option(help="Comma-separated node ids.")]
Config = Annotated[list[str] | None, typer.Option("--config", help="key=value")]


def _agent_of(token: str, option: str = "--token") -> str:
    try:
        return cap.identity_of(token).agent_id
    except Denial as d:
        raise fail(f"{option}: not a capability token, nor an existing file holding one ({d.reason})") from None


def _action(agent: str, action_id: str, action: MeshAction, nodes: str, version: str | None,
            config: list[str] | None, **more: object) -> AgentActionInput:
    try:
        pairs = [kv.split("=", 1) for kv in config or []]
        if any(len(p) != 2 for p in pairs):
            raise fail("--config: key=value")
        return AgentActionInput.model_validate({
            "agent_id": agent, "action_id": action_id, "token": "-", "action": action, "version": version,
            "node_ids": [n.strip() for n in nodes.split(",") if n.strip()], "config": dict(pairs), **more})
    except ValidationError as err:
        raise fail(f"bad action: {safe_errors(err)}") from None


def attenuate(token: TokenArg,
              caveat: Annotated[list[str] | None, typer.Option("--caveat", help="e.g. 'affects_nodes_le = 20'")] = None,
              peer: Annotated[list[str] | None, typer.Option("--peer", help="Needs this peer's discharge")] = None,
              out: Out = None, data_dir: DataDir = None) -> None:
    """Narrow a token with caveats and/or third-party caveats to distinct peers (their public keys come from the
    workers)."""
    tok = token_arg(token)
    s = settings_for(data_dir) if peer else None
    emit(run(attenuate_token(s, tok, caveat or [], peer or [])), out)


def inspect(token: TokenArg, as_json: Json = False) -> None:
    """Show a token's agent, ids and caveats (without verifying it; never the token itself)."""
    try:
        if as_json:
            emit_json(ops.token_summary(token_arg(token)))
            return
        lines = ops.inspect(token_arg(token))
    except WestworldError as err:
        raise fail(err.message) from err
    for line in lines:
        typer.echo(line)


def discharge(token: TokenArg, peer: Annotated[str, typer.Option(help="Your peer node id.")],
              key: Annotated[Path, typer.Option(help="Your peer private key file.")],
              action_id: Annotated[str, typer.Option(help="The action's id (workflow agent-action:<agent>:<id>).")],
              action: Annotated[MeshAction, typer.Option(help="The action you endorse.")],
              nodes: Nodes, version: Annotated[str | None, typer.Option()] = None, config: Config = None,
              ttl: Annotated[int, typer.Option(help="Seconds the discharge stays valid (the network policy's "
                                                    "peers.discharge_ttl_max is the most the check accepts).")] = 600,
              caveat: Annotated[list[str] | None, typer.Option("--caveat")] = None, out: Out = None) -> None:
    """As PEER, discharge your third-party caveat in TOKEN for this one action only (bound to its digest, valid
    for --ttl seconds); prints the bound discharge."""
    tok = token_arg(token)
    if ttl <= 0:
        raise fail("--ttl: a positive number of seconds")
    inp = _action(_agent_of(tok, "TOKEN"), action_id, action, nodes, version, config)
    try:
        emit(dc.discharge(tok, peer, ops.read_private_key(key), caveat or [], action_digest=inp.action_digest(),
                          valid_until=datetime.now(UTC) + timedelta(seconds=ttl)), out)
    except WestworldError as err:
        raise fail(err.message) from err


def act(token: Annotated[str, typer.Option("--token", help="Token or file.")],
        action: Annotated[MeshAction, typer.Option(help="set_version | set_config | restart")],
        nodes: Nodes, version: Annotated[str | None, typer.Option()] = None, config: Config = None,
        discharge: Annotated[list[str] | None, typer.Option("--discharge", help="Discharge token or file")] = None,
        target: Annotated[Path | None, typer.Option(help="MeshTarget JSON: where to execute.")] = None,
        action_id: Annotated[str | None, typer.Option()] = None,
        peers_required: Annotated[int | None, typer.Option(help="Ask for more peers than the network policy's k "
                                                                "for a wide action (fewer is refused).")] = None,
        wait: Annotated[bool, typer.Option(help="Wait for the decision.")] = True,
        data_dir: DataDir = None) -> None:
    """Ask to run ACTION on NODES with the token (sealed to the workers for this action only); prints allowed, or
    denied with the caveat named (exit 4)."""
    s = settings_for(data_dir)
    tok = token_arg(token, "--token")
    more: dict[str, object] = {"discharges": [token_arg(d, "--discharge") for d in discharge or []],
                               "peers_required": peers_required}
    if target is not None:
        try:
            more["target"] = MeshTarget.model_validate_json(target.read_text())
        except (OSError, ValidationError, ValueError) as err:
            raise fail(f"--target {target}: not a MeshTarget JSON file ({type(err).__name__})") from None
    inp = _action(_agent_of(tok), action_id or uuid.uuid4().hex[:12], action, nodes, version, config, **more)

    async def go() -> AgentActionResult | None:
        temporal = await client(s)
        wid = await start_sealed_action(temporal, s, inp, tok)
        typer.echo(f"started {wid}")
        if not wait:
            return None
        return await result_or_refusal(ops.await_action(temporal, wid))

    result = run(go())
    if result is None:
        typer.echo("not waiting; `westworld agent sign` lets peers sign if it is wide")
        return
    typer.echo(ops.describe(result))
    if not result.allowed:
        raise typer.Exit(code=EXIT_DENIED)


def seal(token: Annotated[str, typer.Option("--token", help="Token or file.")],
         input_file: Annotated[Path, typer.Option("--input", help="The workflow's start input (JSON) without "
                                                                   "the token.")],
         workflow: Annotated[str, typer.Option(help=f"One of {', '.join(SEALABLE)}.")] = "AgentActionWorkflow",
         data_dir: DataDir = None) -> None:
    """Print the start input with TOKEN sealed for that one workflow and input, ready for the Temporal UI (the
    token itself never enters workflow history)."""
    s = settings_for(data_dir)
    tok = token_arg(token, "--token")
    try:
        data = json.loads(input_file.read_text())
    except (OSError, ValueError) as err:
        raise fail(f"--input {input_file}: not a JSON file ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise fail(f"--input {input_file}: expected a JSON object")

    async def go() -> str:
        return sealed_input_json(workflow, data, tok, await directory(await client(s), s))

    typer.echo(run(go()))
