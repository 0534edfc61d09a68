"""`westworld charter validate | show | diff | status | propose`: the Anti-Delos charter, on file and on chain.

A charter is in force only when the Charter contract holds its SHA-256 (and version); only a DAO vote executed
through the timelock changes that. So an amendment is an ordinary governor vote: `propose` writes the
``DaoVoteInput`` whose calls are ``Charter.amend(version, hash)`` plus ``Charter.setMetric`` for each metric whose
flags change, `westworld vote propose` starts it, and CharterSyncWorkflow puts the file in force once the vote is
executed. These commands read files, the chain, the gate's status and the sync's query; they open no database.
Other charter groups (consent, export, reports) are added to ``charter_app`` by their own modules.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account import Account

from activities.chain import ChainClient, connect_web3, load_deployment
from activities.charter_chain import CharterChain, read_charter_file
from activities.http import HttpError, get_json
from westworld.chain import CHARTER, OnChainCall
from westworld.charter import Charter, charter_hash, diff
from westworld.charter_sync import CharterOnChain, CharterSyncState
from westworld.errors import CharterInvalid, InvalidInput, WestworldError
from westworld.keys import CHARTER_SYNC_ID
from westworld.vote import GOVERNOR_CHOICES, DaoVoteInput, Proposal, VoteBackend
from workers.cli.charter_rights import cases_app, export_app, report_app
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.output import Json, emit_json
from workers.settings import Settings

charter_app = typer.Typer(help="The Anti-Delos charter: what telemetry may be collected, on chain and enforced.",
                          no_args_is_help=True)

CharterFile = Annotated[Path, typer.Argument(help="A charter file (YAML or JSON, like deploy/charter.yaml).")]


def _read(path: Path) -> tuple[bytes, Charter]:
    try:
        return read_charter_file(path)
    except (CharterInvalid, InvalidInput) as err:
        raise fail(err.message) from err


async def on_chain(s: Settings) -> CharterOnChain:
    """The Charter contract's state (read with a throwaway relayer: nothing is signed or sent)."""
    deployment = load_deployment(s.contracts_file, s.chain_rpc_url)
    w3 = connect_web3(s.chain_rpc_url)
    try:
        return await CharterChain(ChainClient(w3, deployment, Account.create(), dev_time_travel=False)).read()
    finally:
        await w3.provider.disconnect()


def _on_chain(s: Settings) -> tuple[CharterOnChain | None, str]:
    """(the on-chain state, or None and why it could not be read)."""
    try:
        return asyncio.run(on_chain(s)), ""
    except WestworldError as err:
        return None, err.message
    except OSError as err:
        return None, f"cannot read the chain at {s.chain_rpc_url}: {err}; is the stack up? run `westworld up`"


def _metrics_json(charter: Charter) -> list[dict[str, Any]]:
    return [m.model_dump() for m in charter.spec.metrics]


@charter_app.command("validate")
def validate(file: CharterFile, as_json: Json = False) -> None:
    """Check FILE against every rule; every problem is listed at once with its path and line."""
    content, charter = _read(file)
    if as_json:
        emit_json({"file": str(file), "valid": True, "version": charter.metadata.version,
                   "sha256": charter_hash(content), "metrics": len(charter.spec.metrics)})
        return
    typer.echo(f"{file}: valid charter {charter.metadata.name} version {charter.metadata.version}, "
               f"{len(charter.spec.metrics)} metric(s), sha256 {charter_hash(content)}")


@charter_app.command("show")
def show(
    file: Annotated[Path | None, typer.Argument(help="Default: the worker's charter (settings.charter_file).")]
    = None,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """The charter: what may be collected, for how long, with whose consent; and whether the chain holds it."""
    s = settings_for(data_dir)
    path = file or s.charter_file
    content, charter = _read(path)
    digest = charter_hash(content)
    chain, why = _on_chain(s)
    in_force = chain is not None and chain.policy_hash == digest and chain.version == charter.metadata.version
    if as_json:
        emit_json({"file": str(path), "sha256": digest, "version": charter.metadata.version,
                   "on_chain": chain.model_dump() if chain else None, "on_chain_error": why, "in_force": in_force,
                   "metrics": _metrics_json(charter), "blocked": [b.model_dump() for b in charter.spec.blocked],
                   "committee": {"threshold": charter.spec.committee.threshold,
                                 "members": len(charter.spec.committee.members)}})
        return
    typer.echo(f"charter       {path}  ({charter.metadata.name} version {charter.metadata.version})\n"
               f"sha256        {digest}")
    if chain is None:
        typer.echo(f"on chain      unknown: {why}")
    else:
        typer.echo(f"on chain      version {chain.version}, sha256 {chain.policy_hash}  (Charter {chain.address})\n"
                   f"in force      {'yes' if in_force else 'NO: refused until a DAO vote puts it on chain'}")
    typer.echo("allowed metrics:")
    for m in charter.spec.metrics:
        consent = ", consent required" if m.consent_required else ""
        typer.echo(f"  {m.name:28} labels [{', '.join(m.labels)}]  kept {m.retention_days} d{consent}\n"
                   f"  {'':28} {m.purpose}")
    typer.echo("never collected: " + "; ".join(f"{b.category} ({', '.join(b.patterns)})" for b in charter.spec.blocked))
    typer.echo(f"committee: {len(charter.spec.committee.members)} members, decisions "
               f"{charter.spec.committee.threshold}-of-{len(charter.spec.committee.members)}")


@charter_app.command("diff")
def diff_(old: CharterFile, new: CharterFile, as_json: Json = False) -> None:
    """What NEW changes from OLD, metric by metric; changes that collect more are marked."""
    _, a = _read(old)
    _, b = _read(new)
    changes = diff(a, b)
    if as_json:
        emit_json([c.model_dump() for c in changes])
        return
    for c in changes:
        typer.echo(str(c))
    if not changes:
        typer.echo("no changes")


async def _sync_state(s: Settings) -> CharterSyncState | None:
    from workers.client import connect

    client = await connect(s)
    try:
        state: CharterSyncState = await client.get_workflow_handle(CHARTER_SYNC_ID).query(
            "state", result_type=CharterSyncState)
        return state
    except Exception:  # no sync running (or Temporal down): reported as such
        return None


@charter_app.command("status")
def status(as_json: Json = False, data_dir: DataDir = None) -> None:
    """What is in force where: the chain, the sync workflow, the gate and whether its kernel filter runs."""
    s = settings_for(data_dir)
    chain, why = _on_chain(s)
    try:
        gate: dict[str, Any] | None = get_json(f"{s.charter_gate_url}/status", 3)
    except (HttpError, ValueError):
        gate = None
    try:
        sync = asyncio.run(asyncio.wait_for(_sync_state(s), timeout=10))
    except Exception:
        sync = None
    if as_json:
        emit_json({"on_chain": chain.model_dump() if chain else None, "on_chain_error": why,
                   "sync": sync.model_dump() if sync else None, "gate": gate})
        return
    typer.echo(f"on chain      {f'version {chain.version}, sha256 {chain.policy_hash}' if chain else why}")
    if sync is None:
        typer.echo(f"sync          workflow {CHARTER_SYNC_ID} not running (`westworld up` starts it)")
    else:
        typer.echo(f"sync          applied version {sync.applied_version} ({sync.polls} polls)"
                   + (f"\n              REFUSED: {sync.refused}" if sync.refused else ""))
        for layer in sync.layers:
            typer.echo(f"  {layer.layer:8} {layer.state:12} {layer.detail}")
    if gate is None:
        typer.echo(f"gate          not answering at {s.charter_gate_url}")
        return
    typer.echo(f"gate          version {gate['charter']['version'] or 'none (closed)'}, kept {gate['gate']['kept']}, "
               f"dropped {sum(gate['gate']['dropped'].values())} {dict(gate['gate']['dropped'])}")
    kernel = gate["kernel"]
    if kernel["loaded"]:
        typer.echo(f"charter: kernel filter loaded at tc egress of {kernel['device']} "
                   f"(dropped {kernel['stats']['not_allowed']} not allowed, {kernel['stats']['malformed']} "
                   f"malformed, {kernel['stats']['oversized']} oversized); the userspace gate enforces too")
    else:
        typer.echo(f"charter: kernel filter not loaded ({kernel['reason']}); the userspace gate enforces")


def amendment_calls(charter: Charter, digest: str, chain: CharterOnChain | None) -> list[OnChainCall]:
    """``amend(version, hash)`` and a ``setMetric`` for every metric whose on-chain flags differ (removed ones
    are set not allowed)."""
    calls = [OnChainCall(target=CHARTER, signature="amend(uint64,bytes32)",
                         args=[charter.metadata.version, "0x" + digest])]
    known = {r.name: r for r in chain.metrics} if chain else {}
    for m in charter.spec.metrics:
        r = known.get(m.name)
        if r is None or (r.allowed, r.consent_required, r.retention_days) != (True, m.consent_required,
                                                                              m.retention_days):
            calls.append(OnChainCall(target=CHARTER, signature="setMetric(string,bool,bool,uint32)",
                                     args=[m.name, True, m.consent_required, m.retention_days]))
    for name, r in sorted(known.items()):
        if r.allowed and charter.metric(name) is None:
            calls.append(OnChainCall(target=CHARTER, signature="setMetric(string,bool,bool,uint32)",
                                     args=[name, False, False, 0]))
    return calls


def amendment_vote(new: Charter, digest: str, chain: CharterOnChain, listed: list[str], proposal_id: str | None,
                   name: str) -> DaoVoteInput:
    """The governor-backend DAO vote whose executed calls put ``new`` (sha256 ``digest``) on chain."""
    body = (f"Amend the Anti-Delos charter to version {new.metadata.version} (sha256 {digest}), executed through the "
            f"timelock: Charter.amend and the per-metric flags. Once it is, the charter sync puts {name} in "
            "force at the gate, the kernel filter and the scrape.\n\nChanges:\n"
            + ("\n".join(f"- {line}" for line in listed) or "- none"))
    return DaoVoteInput(
        proposal=Proposal(id=proposal_id or f"charter-v{new.metadata.version}-{digest[:8]}",
                          title=f"Amend the charter to version {new.metadata.version} (sha256 {digest[:12]}…)",
                          body=body, choices=list(GOVERNOR_CHOICES), calls=amendment_calls(new, digest, chain)),
        backend=VoteBackend.GOVERNOR,
    )


@charter_app.command("propose")
def propose(
    file: CharterFile,
    out: Annotated[Path | None, typer.Option(help="Write the vote input here (JSON) instead of printing it.")]
    = None,
    proposal_id: Annotated[str | None, typer.Option("--id", help="Proposal id (default: charter-v<version>-<hash>).")]
    = None,
    data_dir: DataDir = None,
) -> None:
    """A governor-backend DaoVoteInput amending the Charter to FILE: start it with `westworld vote propose`; once
    executed, the charter sync puts FILE in force (and refuses the old one)."""
    s = settings_for(data_dir)
    content, new = _read(file)
    digest = charter_hash(content)
    chain, why = _on_chain(s)
    if chain is None:
        raise fail(f"cannot read the Charter on chain: {why}")
    if new.metadata.version <= chain.version:
        raise fail(f"{file} is version {new.metadata.version}; the Charter on chain is already at version "
                   f"{chain.version}: bump metadata.version (the contract only lets the version grow)")
    try:
        _, current = read_charter_file(s.charter_file)
        listed = [str(c) for c in diff(current, new)]
    except (CharterInvalid, InvalidInput):
        listed = [f"(the charter in force, {s.charter_file}, does not read: every rule is listed as new)"]
    inp = amendment_vote(new, digest, chain, listed, proposal_id, file.name)
    text = inp.model_dump_json(indent=2, exclude_none=True)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n")
    typer.echo(f"wrote {out}: a governor vote amending the Charter to version {new.metadata.version} ({digest})\n"
               f"start it with `westworld vote propose {out}`; after it is executed, point the worker's "
               f"WESTWORLD_CHARTER_FILE at {file}")


# The users' rights (workers/cli/charter_rights.py): export, anonymous reports, the committee's cases.
charter_app.add_typer(export_app, name="export")
charter_app.add_typer(report_app, name="report")
charter_app.add_typer(cases_app, name="cases")
