"""The `westworld` command line: the stack, votes, on-call and the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.agent import agent_app, halt_app
from workers.cli.charter import charter_app
from workers.cli.common import DataDir, WestworldGroup, fail, settings_for
from workers.cli.experiment import experiment_app
from workers.cli.output import Json, emit_json
from workers.cli.policy import policy_app
from workers.cli.shelter import shelter_app
from workers.settings import load_settings
from workers.stack import supervisor as stack

app = typer.Typer(help="Westworld: governance and safety for a community mesh network.", no_args_is_help=True,
                  cls=WestworldGroup)  # a stack that does not answer: one clear error from every command
vote_app = typer.Typer(help="Propose, vote and follow DAO votes.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="Payload encryption keys.", no_args_is_help=True)
app.add_typer(vote_app, name="vote")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(experiment_app, name="experiment")
app.add_typer(agent_app, name="agent")
app.add_typer(halt_app, name="halt")
app.add_typer(shelter_app, name="shelter")
app.add_typer(policy_app, name="policy")
app.add_typer(charter_app, name="charter")
_settings = settings_for


@app.command()
def up(data_dir: DataDir = None) -> None:
    """Bring the local stack up (a second `up` is a no-op) and print where everything is."""
    s = _settings(data_dir, create=True)  # the one command that makes a data dir
    try:
        stack.up(s, typer.echo)
    except Exception as err:
        raise fail(str(err)) from err
    typer.echo(f"\nTemporal UI: http://127.0.0.1:{s.temporal_ui_port}   data dir: {s.data_dir}")


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop what `westworld up` started, nothing else."""
    stack.down(_settings(data_dir), typer.echo)


@app.command()
def status(as_json: Json = False, data_dir: DataDir = None) -> None:
    """Health and address of each component."""
    rows = stack.status(_settings(data_dir))
    if as_json:
        emit_json([{"component": name, "health": health, "address": address} for name, health, address in rows])
        return
    for name, health, address in rows:
        typer.echo(f"{name:13} {health:28} {address}")


@app.command()
def worker() -> None:
    """Run the worker in the foreground (what `up` starts)."""
    from workers.worker import main

    main()


@app.command("codec-server")
def codec_server() -> None:
    """Run the codec server in the foreground (what `up` starts)."""
    from workers.codec_server import serve

    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_settings()))


@app.command("charter-gate")
def charter_gate() -> None:
    """Run the charter gate in the foreground (what `up` starts): node telemetry in, the charter enforced."""
    from workers.gate.server import main

    main()


@app.command()
def web() -> None:
    """Run the web process in the foreground: the vote intake, POST /v1/votes (what `up` starts)."""
    from workers.web.app import main

    main()


DEMO_PARTS = ("vote", "experiments", "capabilities", "shelter", "charter")


@app.command()
def demo(
    only: Annotated[list[str] | None, typer.Option("--only", help=f"Run only these parts: {', '.join(DEMO_PARTS)}.")]
    = None,
    part_timeout: Annotated[str, typer.Option(help="Stop a part that runs longer than this (e.g. 10m, 90s) and list "
                                              "the workflows it left running.")] = "10m",
    data_dir: DataDir = None,
) -> None:
    """Walk through each part on the live stack: a DAO vote executed on chain, an experiment promoted and a faulty
    build rolled back, capability-bounded agents and a halted takeover, and the document shelter."""
    from workers.cli.stuck import parse_duration
    from workers.demo.run import run_demos

    parts = only or list(DEMO_PARTS)
    if unknown := sorted(set(parts) - set(DEMO_PARTS)):
        raise fail(f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(DEMO_PARTS)}")
    try:
        limit = parse_duration(part_timeout)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="'--part-timeout'") from err
    try:
        asyncio.run(run_demos(_settings(data_dir), parts, typer.echo, limit))
    except Exception as err:
        raise fail(f"{type(err).__name__}: {err}") from err


@app.command()
def stuck(
    older_than: Annotated[str, typer.Option(help="Only steps older than this, e.g. 30m, 2h, 1d.")] = "1h",
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """Running workflows whose current step has lasted too long, and why."""
    from workers.cli.stuck import find_stuck, parse_duration, render

    try:
        age = parse_duration(older_than)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="'--older-than'") from err
    rows = asyncio.run(find_stuck(_settings(data_dir), age))
    if as_json:
        emit_json(rows)
        return
    typer.echo(render(rows, older_than))


@vote_app.command("propose")
def vote_propose(
    file: Annotated[Path, typer.Argument(help="Proposal YAML/JSON (a DaoVoteInput).")],
    data_dir: DataDir = None,
) -> None:
    """Start a DaoVoteWorkflow from a file."""
    from workers.cli.vote import propose

    asyncio.run(propose(_settings(data_dir), file, typer.echo))


@vote_app.command("cast")
def vote_cast(
    proposal_id: str,
    choice: Annotated[str, typer.Option(help="One of the proposal's choices.")],
    key: Annotated[Path, typer.Option(help="File holding the voter's hex private key.")],
    reason: Annotated[str, typer.Option(help="Why (signed with the vote).")] = "",
    data_dir: DataDir = None,
) -> None:
    """Sign a vote locally with KEY and submit it; prints the weighted receipt or why it was refused."""
    from workers.cli.vote import cast

    asyncio.run(cast(_settings(data_dir), proposal_id, choice, key, reason, typer.echo))


@vote_app.command("status")
def vote_status(proposal_id: str, as_json: Json = False, data_dir: DataDir = None) -> None:
    """Live tally, or the result once decided (amounts in tokens; with --json, in wei as decimal strings)."""
    from workers.cli.vote import show_status

    asyncio.run(show_status(_settings(data_dir), proposal_id, typer.echo, as_json))


@vote_app.command("keygen")
def vote_keygen(out: Annotated[Path, typer.Argument(help="Key file to write (mode 0600; never overwritten).")]) -> None:
    """Make your own voter key (a hex Ethereum private key) and print its address."""
    from workers.cli.vote_power import keygen

    typer.echo(f"wrote {out} (mode 0600); address {keygen(out)}")


@vote_app.command("faucet")
def vote_faucet(
    address: Annotated[str, typer.Argument(help="Who gets the tokens: a 0x address, or a key file.")],
    tokens: Annotated[str, typer.Option("--tokens", help="How many tokens (e.g. 100000; 18 decimals).")],
    data_dir: DataDir = None,
) -> None:
    """LOCAL DEV CHAIN ONLY (chain id 31337; refused on any other): send tokens from the local deployer account,
    which is anvil's well-known public development key (0xf39F…2266, published with anvil: never use it on a real
    network). Tokens count as votes once delegated: `westworld vote delegate`."""
    from workers.cli.vote_power import faucet, parse_tokens

    amount = parse_tokens(tokens)
    for line in asyncio.run(faucet(_settings(data_dir), address, amount)):
        typer.echo(line)


@vote_app.command("delegate")
def vote_delegate(
    key: Annotated[Path, typer.Option(help="File holding your hex private key (from `westworld vote keygen`).")],
    data_dir: DataDir = None,
) -> None:
    """Turn your tokens into voting power: delegate them to yourself. Your key only signs (EIP-712, ERC20Votes
    delegateBySig); the relayer (WESTWORLD_CHAIN_DEPLOYER_KEY) sends the transaction and pays its gas. Counts in
    the votes that open afterwards."""
    from workers.cli.vote_power import delegate

    for line in asyncio.run(delegate(_settings(data_dir), key)):
        typer.echo(line)


@vote_app.command("power")
def vote_power(
    address: Annotated[str, typer.Argument(help="A 0x address, or a key file.")],
    data_dir: DataDir = None,
) -> None:
    """Token balance, delegation and voting power of an address, in tokens."""
    from workers.cli.vote_power import power

    for line in asyncio.run(power(_settings(data_dir), address)):
        typer.echo(line)


LogFile = Annotated[Path | None, typer.Option(
    "--log-file", help="Offline: a copy of the log (its SQLite file), read here without the worker.")]


@audit_app.command("verify")
def audit_verify(
    log_file: LogFile = None,
    heads_file: Annotated[Path | None, typer.Option(help="Offline: the signed heads (default: audit-heads.jsonl "
                                                    "beside --log-file).")] = None,
    public_key: Annotated[str | None, typer.Option(help="Offline: the log's hex Ed25519 public key (default: "
                                                   "audit-head.pub beside --log-file).")] = None,
    chain: Annotated[bool, typer.Option(help="Check against the latest audit anchor on chain.")] = True,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """Verify the audit log against its signed heads and the chain anchor; name every changed, removed,
    rewritten or unreadable entry (exit 4). Runs in the worker; with --log-file, offline on a copy."""
    from westworld.errors import Refused
    from workers.cli.audit import verify, verify_file

    s = _settings(data_dir, create=True)  # a missing data dir is named by the command ("no audit log at ...")
    try:
        code = asyncio.run(verify_file(s, log_file, heads_file, public_key, chain, typer.echo, as_json) if log_file
                           else verify(s, typer.echo, chain, as_json))
    except Refused as err:
        raise fail(str(err)) from err
    raise typer.Exit(code=code)


@audit_app.command("show")
def audit_show(
    last: Annotated[int, typer.Option(min=1, max=1000, help="How many of the latest entries.")] = 10,
    log_file: LogFile = None,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """The latest entries with the current root (through the worker; with --log-file, from a copy)."""
    from westworld.errors import Refused
    from workers.cli.audit import show

    try:
        code = asyncio.run(show(_settings(data_dir, create=True), last, typer.echo, log_file, as_json))
    except Refused as err:
        raise fail(str(err)) from err
    raise typer.Exit(code=code)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None) -> None:
    """Add a new payload key and make it active; old keys keep decrypting old payloads."""
    from workers.codec import rotate_keyring

    s = _settings(data_dir)
    typer.echo(f"active key is now {rotate_keyring(s.resolved_codec_key_file)}; restart the worker to use it")


def main() -> None:
    """Run the CLI, then leave without interpreter finalization.

    The Temporal SDK's core runtime keeps native threads; after a refused update they can race the interpreter's
    finalization and abort the process (exit -6) after the real answer was printed. The exit code is the CLI's own.
    """
    code = 0
    try:
        app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
