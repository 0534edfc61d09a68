"""`westworld halt status | start | resume | guardians add | guardians remove`: the network halt, from the
guardians' side. A client of Temporal only: changes are signed here with the signers' key files (``--key``) and
checked by the worker; reads go through the worker (CapabilityReadWorkflow)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from temporalio.service import RPCError

from westworld.agents import AdminAction, AdminChange
from westworld.errors import NotConfigured, WestworldError
from westworld.keys import halt_id
from workers.cli import agent_ops as ops
from workers.cli.agent_common import client, run
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.output import Json, emit_json
from workers.stack import standing
from workflows.network_halt import NetworkHaltWorkflow

halt_app = typer.Typer(help="The network halt: status, and guardians' resume.", no_args_is_help=True)
guardians_app = typer.Typer(help="Guardians who resume a halted network.", no_args_is_help=True)
halt_app.add_typer(guardians_app, name="guardians")
SignKeys = Annotated[list[Path] | None, typer.Option(
    "--key", help="A signer's private key file (repeat for k guardians): an operator's, or guardians'.")]
PublicKey = Annotated[str | None, typer.Option(help="The registered party's Ed25519 public key (hex).")]
NewKey = Annotated[Path | None, typer.Option(help="Generate the party's key pair into this file (mode 0600) and "
                                                  "register its public key; hand the file to them.")]


def signing_keys(paths: list[Path] | None) -> list[bytes]:
    if not paths:
        raise fail("--key: the signer's private key file is needed (an operator's, or k guardians')")
    try:
        return [ops.read_private_key(p) for p in paths]
    except WestworldError as err:
        raise fail(err.message) from err


def public_key_for(public_key: str | None, new_key: Path | None) -> str:
    if bool(public_key) == bool(new_key):
        raise fail("give exactly one of --public-key or --new-key")
    if new_key:
        return standing.new_keypair(new_key)
    assert public_key is not None
    return public_key.lower()


@guardians_app.command("add")
def guardians_add(guardian_id: str, key: SignKeys = None, public_key: PublicKey = None, new_key: NewKey = None,
                  data_dir: DataDir = None) -> None:
    """Register a guardian (signed by the operator at genesis, then by k guardians)."""
    s = settings_for(data_dir)
    keys = signing_keys(key)
    public = public_key_for(public_key, new_key)

    async def go() -> str:
        return (await ops.admin(await client(s), s, AdminChange(
            action=AdminAction.ADD_GUARDIAN, subject=guardian_id, public_key=public), keys)).detail

    typer.echo(run(go()) + (f"; private key in {new_key}" if new_key else ""))


@guardians_app.command("remove")
def guardians_remove(guardian_id: str, key: SignKeys = None, data_dir: DataDir = None) -> None:
    """Remove a guardian (k guardians sign; the operator at genesis)."""
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> str:
        return (await ops.admin(await client(s), s, AdminChange(
            action=AdminAction.REMOVE_GUARDIAN, subject=guardian_id), keys)).detail

    typer.echo(run(go()))


@halt_app.command("status")
def halt_status(as_json: Json = False, data_dir: DataDir = None) -> None:
    """Whether the network is halted, why, and which guardians have signed the resume."""
    s = settings_for(data_dir)

    async def as_document() -> dict[str, Any]:
        temporal = await client(s)
        state = (await ops.registries(temporal, s)).halt
        resume = None
        if state.halted:
            with contextlib.suppress(RPCError):
                resume = await temporal.get_workflow_handle(halt_id(state.epoch)).query(NetworkHaltWorkflow.status)
        return {"halt": state, "resume": resume}

    if as_json:
        emit_json(run(as_document()))
        return

    async def go() -> list[str]:
        temporal = await client(s)
        state = (await ops.registries(temporal, s)).halt
        if not state.halted:
            return ["not halted: capability checks run normally"]
        lines = [f"HALTED since {state.since} (epoch {state.epoch}): {state.reason}"]
        try:
            st = await temporal.get_workflow_handle(halt_id(state.epoch)).query(NetworkHaltWorkflow.status)
            lines.append(f"resume needs {st.guardians_required} guardians; signed: {st.signed_by or 'none'}")
            lines.append(f"resume digest: {st.digest}")
        except (RPCError, NotConfigured) as err:
            lines.append(f"(the halt workflow {halt_id(state.epoch)} cannot be queried: {err})")
        return lines

    for line in run(go()):
        typer.echo(line)


@halt_app.command("start")
def halt_start(reason: Annotated[str, typer.Option()], key: SignKeys = None,
               guardians_required: Annotated[int, typer.Option(help="k to resume (at least the policy's).")] = 0,
               data_dir: DataDir = None) -> None:
    """Halt the network by hand (a drill, or an operator's call, signed with the operator's --key)."""
    s = settings_for(data_dir)
    keys = signing_keys(key)

    async def go() -> int:
        return await ops.start_halt(await client(s), s, reason, guardians_required, keys)

    typer.echo(f"halted: epoch {run(go())}")


@halt_app.command("resume")
def halt_resume(guardian: Annotated[str, typer.Option(help="Your guardian id.")],
                key: Annotated[Path, typer.Option(help="Your guardian private key file.")],
                epoch: Annotated[int | None, typer.Option(help="Default: the active halt.")] = None,
                data_dir: DataDir = None) -> None:
    """As a guardian, sign the resume of the halt (locally) and submit the signature."""
    s = settings_for(data_dir)

    async def go() -> str:
        temporal = await client(s)
        e = epoch
        if e is None:
            state = (await ops.registries(temporal, s)).halt
            if not state.halted:
                return "the network is not halted"
            e = state.epoch
        n = await ops.sign_resume(temporal, e, guardian, ops.read_private_key(key))
        return f"accepted: {n} guardian signatures on halt {e}"

    typer.echo(run(go()))
