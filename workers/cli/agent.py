"""`westworld agent mint | attenuate | inspect | act | sign | discharge | revoke | keys | peers | watch`.

``halt_app`` (`westworld halt ...`) lives in :mod:`workers.cli.halt` and is re-exported here, where the CLI mounts it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from westworld.agents import (
    AdminAction,
    AdminChange,
    AdminResult,
    AnomalyWatchInput,
    CapabilityRegistries,
    WatchSettings,
)
from westworld.keys import WATCH_ID
from westworld.sandbox import MeshAction
from workers.cli import agent_act
from workers.cli import agent_ops as ops
from workers.cli.agent_common import client, emit, run
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.halt import NewKey, PublicKey, SignKeys, halt_app, public_key_for, signing_keys
from workers.cli.output import Json, emit_json
from workers.stack import standing
from workflows.anomaly_watch import AnomalyWatchWorkflow

agent_app = typer.Typer(help="Capability tokens (macaroons) for automated agents, and their actions.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="Root keys that mint capability tokens.", no_args_is_help=True)
peers_app = typer.Typer(help="Mesh nodes and the peers among them that sign wide actions.", no_args_is_help=True)
agent_app.add_typer(keys_app, name="keys")
agent_app.add_typer(peers_app, name="peers")
TokenArg = Annotated[str, typer.Argument(help="The token, or a file holding it.")]
Out = Annotated[Path | None, typer.Option("--out", help="Write the token to this file (mode 0600).")]

def _admin(data_dir: Path | None, change: AdminChange, key: list[Path] | None) -> AdminResult:
    """Send ``change`` to the worker signed with the --key files; the worker checks who signed."""
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> AdminResult:
        return await ops.admin(await client(s), s, change, keys)

    return run(go())


@keys_app.command("rotate")
def keys_rotate(key: SignKeys = None, data_dir: DataDir = None) -> None:
    """Create a new root key and mint with it from now on (older keys keep verifying their tokens); an
    operator signs."""
    typer.echo(_admin(data_dir, AdminChange(action=AdminAction.ROTATE_KEY), key).detail)


@keys_app.command("retire")
def keys_retire(key_id: str, key: SignKeys = None, data_dir: DataDir = None) -> None:
    """Delete a root key: every token minted under it stops verifying; an operator signs."""
    typer.echo(_admin(data_dir, AdminChange(action=AdminAction.RETIRE_KEY, subject=key_id), key).detail)


@agent_app.command()
def mint(agent: str, actions: Annotated[str, typer.Option(help="Comma-separated allowed actions.")],
         key: SignKeys = None, out: Out = None, data_dir: DataDir = None) -> None:
    """Mint a root token for AGENT allowing ACTIONS (set_version, set_config, restart); an operator signs."""
    wanted = [a.strip() for a in actions.split(",") if a.strip()]
    bad = [a for a in wanted if a not in {m.value for m in MeshAction}]
    if bad:
        raise fail(f"--actions: unknown action {bad[0]!r} (known: {', '.join(m.value for m in MeshAction)})")
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> str:
        return await ops.mint(await client(s), s, agent, wanted, keys)

    emit(run(go()), out)


# An agent's and its peers' commands (tokens never echoed, sealed for the one action they start).
for _command in (agent_act.attenuate, agent_act.inspect, agent_act.discharge, agent_act.act, agent_act.seal):
    agent_app.command()(_command)


@agent_app.command()
def sign(workflow_id: Annotated[str, typer.Argument(help="agent-action:<agent>:<action id>")],
         peer: Annotated[str, typer.Option(help="Your peer node id.")],
         key: Annotated[Path, typer.Option(help="Your peer private key file.")], data_dir: DataDir = None) -> None:
    """As PEER, sign the action's digest with your key (locally) and submit the signature."""
    s = settings_for(data_dir)

    async def go() -> int:
        return await ops.sign_action(await client(s), workflow_id, peer, ops.read_private_key(key))

    typer.echo(f"accepted: {run(go())} peer signatures so far")


@agent_app.command()
def revoke(token_id: Annotated[str | None, typer.Option(help="Revoke one token (and its attenuations).")] = None,
           all_tokens: Annotated[bool, typer.Option("--all", help="Revoke every token minted so far.")] = False,
           reason: str = "revoked by operator", key: SignKeys = None, data_dir: DataDir = None) -> None:
    """Revoke a token by id, or every token so far (a new revocation epoch); an operator signs."""
    if bool(token_id) == all_tokens:
        raise fail("give exactly one of --token-id or --all")
    change = (AdminChange(action=AdminAction.REVOKE_TOKEN, subject=token_id, reason=reason) if token_id
              else AdminChange(action=AdminAction.REVOKE_ALL, reason=reason))
    typer.echo(_admin(data_dir, change, key).detail)


@peers_app.command("add")
def peers_add(node_ids: Annotated[list[str], typer.Argument(help="One or more node ids.")],
              region: Annotated[str, typer.Option()] = "",
              signer: Annotated[bool, typer.Option(help="Peers that sign (one node, with --public-key or --new-key)"
                                                        "; --no-signer registers plain nodes.")] = True,
              public_key: PublicKey = None, new_key: NewKey = None, key: SignKeys = None,
              data_dir: DataDir = None) -> None:
    """Register mesh nodes (an operator signs), or one peer that signs wide actions (the operator at genesis,
    then k guardians sign); only the peer's public key is registered."""
    if not signer:
        typer.echo(_admin(data_dir, AdminChange(action=AdminAction.ADD_NODES, node_ids=node_ids, region=region),
                          key).detail)
        return
    if len(node_ids) != 1:
        raise fail("a peer that signs is registered one at a time, with its --public-key or --new-key")
    public = public_key_for(public_key, new_key)
    result = _admin(data_dir, AdminChange(action=AdminAction.ADD_PEER, subject=node_ids[0], region=region,
                                          public_key=public), key)
    typer.echo(result.detail + (f"; private key in {new_key}" if new_key else ""))


@peers_app.command("remove")
def peers_remove(node_id: str, key: SignKeys = None, data_dir: DataDir = None) -> None:
    """Remove a node or peer (k guardians sign; the operator at genesis)."""
    typer.echo(_admin(data_dir, AdminChange(action=AdminAction.REMOVE_NODE, subject=node_id), key).detail)


@peers_app.command("list")
def peers_list(as_json: Json = False, data_dir: DataDir = None) -> None:
    """Registered nodes, their regions, and which of them sign (read by the worker)."""
    s = settings_for(data_dir)

    async def go() -> CapabilityRegistries:
        return await ops.registries(await client(s), s)

    found = run(go())
    regions, signers = found.nodes, found.peers
    if as_json:
        emit_json({"nodes": regions, "peers": signers})
        return
    for node, region in sorted(regions.items()):
        typer.echo(f"{node:24} {region or '-':12} {'peer ' + signers[node][:16] + '…' if node in signers else ''}")
    typer.echo(f"{len(regions)} nodes, {len(signers)} peers")


@agent_app.command("watch")
def watch(poll_seconds: Annotated[float, typer.Option(help="How often the decision feed is read.")] = 15.0,
          guardians_required: Annotated[int, typer.Option()] = 2, key: SignKeys = None,
          data_dir: DataDir = None) -> None:
    """Start the network's AnomalyWatchWorkflow (id anomaly-watch) unless it runs (`westworld up` starts it too);
    settings stricter than the defaults need an operator's --key (looser than the policy: the policy's)."""
    s = settings_for(data_dir)
    inp = AnomalyWatchInput(poll_interval=timedelta(seconds=poll_seconds), guardians_required=guardians_required)
    if key:
        inp = ops.sign_watch_start(inp, signing_keys(key))

    async def go() -> str:
        return await standing.ensure_watch(await client(s), s, inp)

    typer.echo(f"anomaly-watch: {run(go())}")


@agent_app.command("watch-set")
def watch_set(reason: Annotated[str, typer.Option(help="Why (audited).")], key: SignKeys = None,
              concentration_critical_pct: Annotated[float | None, typer.Option()] = None,
              coverage_critical_pct: Annotated[float | None, typer.Option()] = None,
              poll_seconds: Annotated[float | None, typer.Option()] = None,
              guardians_required: Annotated[int | None, typer.Option()] = None, data_dir: DataDir = None) -> None:
    """Change the running watch's settings (the rest stay): tightening needs one operator's --key, loosening k
    guardians' --key; never looser than the network policy."""
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> str:
        temporal = await client(s)
        current = (await temporal.get_workflow_handle(WATCH_ID).query(
            AnomalyWatchWorkflow.status)).settings or WatchSettings()
        config = current.config.model_copy(update={k: v for k, v in (
            ("concentration_critical_pct", concentration_critical_pct),
            ("coverage_critical_pct", coverage_critical_pct)) if v is not None})
        new = WatchSettings(config=config, poll_interval=timedelta(seconds=poll_seconds) if poll_seconds
                            else current.poll_interval,
                            guardians_required=guardians_required or current.guardians_required)
        await ops.reconfigure_watch(temporal, new, reason, keys)
        return f"anomaly-watch reconfigured (was {current.model_dump_json()})"

    typer.echo(run(go()))


@agent_app.command("watch-stop")
def watch_stop(reason: Annotated[str, typer.Option(help="Why (audited).")], key: SignKeys = None,
               data_dir: DataDir = None) -> None:
    """Stop the network's anomaly watch: k guardians sign (--key, repeated)."""
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> int:
        return await ops.stop_watch(await client(s), reason, keys)

    typer.echo(f"anomaly-watch stopped after {run(go())} polls")


__all__ = ["agent_app", "halt_app"]
