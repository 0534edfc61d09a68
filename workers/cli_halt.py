"""`westworld halt status | start | resume | guardians add`: the network halt, from the guardians' side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from temporalio.service import RPCError

from workers import agent_ops as ops
from workers.cli_agent_common import client, run
from workers.cli_common import DataDir, settings_for
from workers.client import NotConfigured
from workflows.network_halt import NetworkHaltWorkflow

halt_app = typer.Typer(help="The network halt: status, and guardians' resume.", no_args_is_help=True)
guardians_app = typer.Typer(help="Guardians who resume a halted network.", no_args_is_help=True)
halt_app.add_typer(guardians_app, name="guardians")


@guardians_app.command("add")
def guardians_add(guardian_id: str, data_dir: DataDir = None) -> None:
    """Register a guardian; its Ed25519 key is generated into the data dir (only the public key is registered)."""
    s = settings_for(data_dir)
    path = ops.keys_dir(s) / f"guardian-{guardian_id}.key"

    async def go() -> None:
        public = ops.new_keypair(path)
        async with ops.store_of(s) as store:
            await store.add_guardian(guardian_id, public, ops.now())

    run(go())
    typer.echo(f"registered guardian {guardian_id}; private key in {path}")


@halt_app.command("status")
def halt_status(data_dir: DataDir = None) -> None:
    """Whether the network is halted, why, and which guardians have signed the resume."""
    s = settings_for(data_dir)

    async def go() -> list[str]:
        async with ops.store_of(s) as store:
            state = await store.halt_state()
        if not state.halted:
            return ["not halted: capability checks run normally"]
        lines = [f"HALTED since {state.since} (epoch {state.epoch}): {state.reason}"]
        try:
            st = await (await client(s)).get_workflow_handle_for(
                NetworkHaltWorkflow.run, f"halt:{state.epoch}").query(NetworkHaltWorkflow.status)
            lines.append(f"resume needs {st.guardians_required} guardians; signed: {st.signed_by or 'none'}")
            lines.append(f"resume digest: {st.digest}")
        except (RPCError, NotConfigured) as err:
            lines.append(f"(the halt workflow halt:{state.epoch} cannot be queried: {err})")
        return lines

    for line in run(go()):
        typer.echo(line)


@halt_app.command("start")
def halt_start(reason: Annotated[str, typer.Option()], guardians_required: Annotated[int, typer.Option()] = 2,
               data_dir: DataDir = None) -> None:
    """Halt the network by hand (a drill, or an operator's call); guardians resume it."""
    s = settings_for(data_dir)

    async def go() -> int:
        return await ops.start_halt(await client(s), s, reason, guardians_required)

    typer.echo(f"halted: epoch {run(go())}")


@halt_app.command("resume")
def halt_resume(guardian: Annotated[str, typer.Option(help="Your guardian id.")],
                key: Annotated[Path, typer.Option(help="Your guardian private key file.")],
                epoch: Annotated[int | None, typer.Option(help="Default: the active halt.")] = None,
                data_dir: DataDir = None) -> None:
    """As a guardian, sign the resume of the halt (locally) and submit the signature."""
    s = settings_for(data_dir)

    async def go() -> str:
        e = epoch
        if e is None:
            async with ops.store_of(s) as store:
                state = await store.halt_state()
            if not state.halted:
                return "the network is not halted"
            e = state.epoch
        n = await ops.sign_resume(await client(s), e, guardian, ops.read_private_key(key))
        return f"accepted: {n} guardian signatures on halt {e}"

    typer.echo(run(go()))
