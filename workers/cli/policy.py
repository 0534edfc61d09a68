"""`westworld policy show | hash | propose`: the network policy in force, and how the DAO amends it.

The worker enforces a policy file only if its SHA-256 (of the canonical JSON, ``westworld.policy.policy_hash``) is
``MeshConfig.parameters("policy.sha256")`` on chain, and only a Governor vote executed through the timelock changes
that parameter. So an amendment is an ordinary DAO vote: `propose` writes the ``DaoVoteInput`` (backend governor)
whose one call sets the new hash, `westworld vote propose` starts it, and once it is executed the operator deploys
the new file. These commands read the file and the chain only; they open no database and start nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account import Account

from activities.chain import ChainClient, connect_web3, load_deployment
from activities.policy import read_policy_file
from westworld.chain import MESH_CONFIG, OnChainCall
from westworld.errors import WestworldError
from westworld.policy import POLICY_HASH_KEY, NetworkPolicy, policy_hash
from westworld.vote import GOVERNOR_CHOICES, DaoVoteInput, Proposal, VoteBackend
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.output import Json, emit_json
from workers.settings import Settings

policy_app = typer.Typer(help="The network policy the DAO set: what is in force, and amending it by a DAO vote.",
                         no_args_is_help=True)

PolicyFile = Annotated[Path, typer.Argument(help="A policy file (YAML or JSON, like deploy/policy.yaml).")]


def _read(path: Path) -> NetworkPolicy:
    try:
        return read_policy_file(path)
    except ValueError as err:
        raise fail(str(err)) from err


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"votes": {"quorum_min": "0.04"}}`` -> ``{"votes.quorum_min": "0.04"}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def changes(old: NetworkPolicy | None, new: NetworkPolicy) -> list[str]:
    """What ``new`` changes, one ``field: old -> new`` per line (every field if ``old`` is unknown)."""
    before = flatten(old.model_dump(mode="json")) if old else {}
    after = flatten(new.model_dump(mode="json"))
    return [f"{k}: {before[k]} -> {v}" if k in before else f"{k}: {v}"
            for k, v in sorted(after.items()) if before.get(k) != v]


async def hash_on_chain(s: Settings) -> tuple[str, str]:
    """(the policy hash MeshConfig holds, lower-case hex without 0x or "" if unset; MeshConfig's address)."""
    deployment = load_deployment(s.contracts_file, s.chain_rpc_url)
    w3 = connect_web3(s.chain_rpc_url)
    try:  # a throwaway relayer: nothing is signed or sent, MeshConfig is only read
        chain = ChainClient(w3, deployment, Account.create(), dev_time_travel=False)
        value = await chain.read_parameter(POLICY_HASH_KEY)
    finally:
        await w3.provider.disconnect()
    return value.removeprefix("0x").lower(), deployment.address(MESH_CONFIG)


def _on_chain(s: Settings) -> tuple[str, str]:
    try:
        return asyncio.run(hash_on_chain(s))
    except WestworldError as err:  # no deployment record
        raise fail(err.message) from err
    except OSError as err:
        raise fail(f"cannot read the chain at {s.chain_rpc_url}: {err}; is the stack up? run `westworld up`") \
            from err


def _in_force(s: Settings) -> NetworkPolicy | None:
    """The configured policy file, for the proposal's list of changes (None if it does not read)."""
    try:
        return read_policy_file(s.policy_file)
    except ValueError:
        return None


@policy_app.command("show")
def show(
    file: Annotated[Path | None, typer.Option(help="The policy file (default: the worker's, settings.policy_file).")]
    = None,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """The policy in force: the file the worker loads, its hash, and the hash the DAO put on chain."""
    s = settings_for(data_dir)
    path = file or s.policy_file
    policy = _read(path)
    mine = policy_hash(policy)
    on_chain, address = _on_chain(s)
    if as_json:  # a mismatch also exits 1, with the error on stderr
        emit_json({"file": str(path), "file_hash": mine, "on_chain_hash": on_chain, "mesh_config": address,
                   "in_force": on_chain == mine, "policy": policy})
    else:
        typer.echo(f"policy file   {path}\nfile hash     {mine}\non chain      {on_chain or 'unset'}   "
                   f"(MeshConfig {address}, parameter {POLICY_HASH_KEY!r})")
    if on_chain != mine:
        raise fail(f"MISMATCH: {path} is not the policy the DAO set; the worker refuses it (every workflow that "
                   f"loads the policy fails with PolicyNotOnChain). Put back the file whose hash is "
                   f"{on_chain or '(unset)'}, or put this one to a DAO vote: `westworld policy propose {path}`")
    if as_json:
        return
    typer.echo("in force      yes: the worker enforces this file")
    for line in changes(None, policy):
        typer.echo(f"  {line}")


@policy_app.command("hash")
def hash_(file: PolicyFile) -> None:
    """The hash a DAO proposal must set for FILE to take effect (SHA-256 of its canonical JSON)."""
    typer.echo(policy_hash(_read(file)))


@policy_app.command("propose")
def propose(
    file: PolicyFile,
    out: Annotated[Path | None, typer.Option(help="Write the vote input here (JSON) instead of printing it.")]
    = None,
    proposal_id: Annotated[str | None, typer.Option("--id", help="Proposal id (default: policy-<hash prefix>).")]
    = None,
    data_dir: DataDir = None,
) -> None:
    """A governor-backend DaoVoteInput whose one call is MeshConfig.setParameter("policy.sha256", <FILE's hash>):
    start it with `westworld vote propose`; once executed, the worker accepts FILE and refuses the old one."""
    s = settings_for(data_dir)
    new = _read(file)
    digest = policy_hash(new)
    listed = changes(_in_force(s), new)
    inp = vote_input(digest, listed, proposal_id or f"policy-{digest[:12]}", file.name)
    text = inp.model_dump_json(indent=2, exclude_none=True)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n")
    typer.echo(f"wrote {out}: a governor vote setting {POLICY_HASH_KEY} = {digest}\n"
               f"start it with `westworld vote propose {out}`; after it is executed, point the worker at {file}")


def vote_input(digest: str, listed: list[str], proposal_id: str, name: str) -> DaoVoteInput:
    """The DAO vote that puts ``digest`` on chain (terms: the policy's own floors, set by the vote workflow)."""
    body = (f"Amend the network policy: MeshConfig.setParameter({POLICY_HASH_KEY!r}, {digest!r}), executed through "
            f"the timelock. Once it is, workers load {name} (and refuse the policy it replaces).\n\nChanges:\n"
            + ("\n".join(f"- {line}" for line in listed) or "- none (the same policy, re-approved)"))
    return DaoVoteInput(
        proposal=Proposal(
            id=proposal_id, title=f"Amend the network policy (sha256 {digest[:12]}…)", body=body,
            choices=list(GOVERNOR_CHOICES),
            calls=[OnChainCall(target=MESH_CONFIG, signature="setParameter(string,string)",
                               args=[POLICY_HASH_KEY, digest])],
        ),
        backend=VoteBackend.GOVERNOR,
    )
