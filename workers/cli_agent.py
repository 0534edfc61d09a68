"""`westworld agent mint | attenuate | inspect | act | sign | discharge | revoke | keys | peers | watch`.

``halt_app`` (`westworld halt ...`) lives in :mod:`workers.cli_halt` and is re-exported here, where the CLI mounts it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from westworld.agents import AnomalyWatchInput
from westworld.sandbox import MeshAction
from workers import agent_ops as ops
from workers import cli_agent_act as agent_act
from workers.cli_agent_common import client, emit, run
from workers.cli_common import DataDir, fail, settings_for
from workers.cli_halt import halt_app

agent_app = typer.Typer(help="Capability tokens (macaroons) for automated agents, and their actions.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="Root keys that mint capability tokens.", no_args_is_help=True)
peers_app = typer.Typer(help="Mesh nodes and the peers among them that sign wide actions.", no_args_is_help=True)
agent_app.add_typer(keys_app, name="keys")
agent_app.add_typer(peers_app, name="peers")
TokenArg = Annotated[str, typer.Argument(help="The token, or a file holding it.")]
Out = Annotated[Path | None, typer.Option("--out", help="Write the token to this file (mode 0600).")]

@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None) -> None:
    """Create a new root key and mint with it from now on (older keys keep verifying their tokens)."""
    s = settings_for(data_dir)

    async def go() -> str:
        async with ops.store_of(s) as store:
            return await store.rotate_key(ops.now())

    typer.echo(f"active root key: {run(go())}")


@keys_app.command("retire")
def keys_retire(key_id: str, data_dir: DataDir = None) -> None:
    """Delete a root key: every token minted under it stops verifying."""
    s = settings_for(data_dir)

    async def go() -> bool:
        async with ops.store_of(s) as store:
            return await store.retire_key(key_id)

    if not run(go()):
        raise fail(f"no root key {key_id!r}")
    typer.echo(f"retired {key_id}")


@agent_app.command()
def mint(agent: str, actions: Annotated[str, typer.Option(help="Comma-separated allowed actions.")],
         out: Out = None, data_dir: DataDir = None) -> None:
    """Mint a root token for AGENT allowing ACTIONS (set_version, set_config, restart)."""
    s = settings_for(data_dir)
    wanted = [a.strip() for a in actions.split(",") if a.strip()]
    bad = [a for a in wanted if a not in {m.value for m in MeshAction}]
    if bad:
        raise fail(f"--actions: unknown action {bad[0]!r} (known: {', '.join(m.value for m in MeshAction)})")

    async def go() -> str:
        async with ops.store_of(s) as store:
            return await store.mint(agent, wanted)

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
           reason: str = "revoked by operator", data_dir: DataDir = None) -> None:
    """Revoke a token by id, or every token so far (a new revocation epoch)."""
    s = settings_for(data_dir)
    if bool(token_id) == all_tokens:
        raise fail("give exactly one of --token-id or --all")

    async def go() -> str:
        async with ops.store_of(s) as store:
            if token_id:
                await store.revoke_token(token_id, reason, ops.now())
                return f"revoked token {token_id}"
            return f"revocation epoch is now {await store.bump_revocation_epoch()}: every older token is revoked"

    typer.echo(run(go()))


@peers_app.command("add")
def peers_add(node_ids: Annotated[list[str], typer.Argument(help="One or more node ids.")],
              region: Annotated[str, typer.Option()] = "",
              signer: Annotated[bool, typer.Option(help="Also peers that sign: generate their keys here.")] = True,
              data_dir: DataDir = None) -> None:
    """Register mesh nodes; a signer gets an Ed25519 key in the data dir (only the public key is registered)."""
    s = settings_for(data_dir)

    async def go() -> list[str]:
        done = []
        async with ops.store_of(s) as store:
            for node_id in node_ids:
                path = ops.keys_dir(s) / f"peer-{node_id}.key"
                public = ops.new_keypair(path) if signer else None
                await store.add_node(node_id, region, public, ops.now())
                done.append(f"registered {node_id}" + (f"; private key in {path}" if public else ""))
        return done

    for line in run(go()):
        typer.echo(line)


@peers_app.command("list")
def peers_list(data_dir: DataDir = None) -> None:
    """Registered nodes, their regions, and which of them sign."""
    s = settings_for(data_dir)

    async def go() -> tuple[dict[str, str], dict[str, str]]:
        async with ops.store_of(s) as store:
            return await store.node_regions(), await store.peers()

    regions, signers = run(go())
    for node, region in sorted(regions.items()):
        typer.echo(f"{node:24} {region or '-':12} {'peer ' + signers[node][:16] + '…' if node in signers else ''}")
    typer.echo(f"{len(regions)} nodes, {len(signers)} peers")


@agent_app.command("watch")
def watch(poll_seconds: Annotated[float, typer.Option(help="How often the decision feed is read.")] = 15.0,
          guardians_required: Annotated[int, typer.Option()] = 2, data_dir: DataDir = None) -> None:
    """Start the network's AnomalyWatchWorkflow (id anomaly-watch) unless it runs (`westworld up` starts it too)."""
    s = settings_for(data_dir)
    inp = AnomalyWatchInput(poll_interval=timedelta(seconds=poll_seconds), guardians_required=guardians_required)

    async def go() -> str:
        return await ops.ensure_watch(await client(s), s, inp)

    typer.echo(f"anomaly-watch: {run(go())}")


__all__ = ["agent_app", "halt_app"]
