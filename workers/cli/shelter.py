"""`westworld shelter keygen | guardians init | store | request | emergency | pending | submit-share | acknowledge |
open | rotate | status`."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from westworld.errors import Refused, WestworldError
from westworld.keys import key_epoch_read_id
from westworld.rotation import GuardianRotationInput, enough_guardians
from westworld.shelter import Network, StoreDocumentState
from westworld.shelter_access import AccessRequest, VoteTerms
from workers.cli import shelter_ops as ops
from workers.cli.common import DataDir, fail, fail_for, settings_for
from workers.cli.output import Json, emit_json
from workers.cli.shelter_keys import PartyKeys, load_guardian, load_keys, make_keys, save_keys
from workers.client import connect
from workers.settings import Settings

shelter_app = typer.Typer(help="The shelter: encrypted replicated documents and guardian key shares.",
                          no_args_is_help=True)
guardians_app = typer.Typer(help="The guardian set of the shelter key.", no_args_is_help=True)
shelter_app.add_typer(guardians_app, name="guardians")

T = TypeVar("T")
KeyFile = Annotated[Path, typer.Option("--key", help="Your key file (from `shelter keygen`).")]
Quorum = Annotated[str | None, typer.Option(help="Vote quorum (share of voting power); default and least: the "
                                            "network policy's votes.quorum_min (a lower one is refused).")]
Answer = Callable[[Client, str, PartyKeys], Awaitable[tuple[str, int]]]  # ops.submit_share, ops.submit_ack


def _run(s: Settings, work: Awaitable[T]) -> T:
    try:
        return asyncio.run(_awaited(work))
    except WestworldError as err:  # a refusal, the stack not set up here or down, a bad input
        raise fail_for(err) from err
    except WorkflowAlreadyStartedError as err:
        raise fail(f"{err.workflow_id} already exists (a document, request or running rotation with that id)") from err
    except (RPCError, ValidationError) as err:
        raise fail(f"{type(err).__name__}: {err}") from err


async def _awaited(work: Awaitable[T]) -> T:  # asyncio.run takes a coroutine, not any awaitable
    return await work


def _keys_dir(s: Settings) -> Path:
    return s.data_dir / "shelter" / "keys"


def _load_keys(key: Path) -> PartyKeys:
    try:
        return load_keys(key)
    except WestworldError as err:
        raise fail(err.message) from err


@shelter_app.command()
def keygen(
    name: Annotated[str, typer.Option("--name", "--guardian", help="Your id, e.g. 'alice' (a-z 0-9 . _ @ -).")],
    out: Annotated[Path | None, typer.Option(help="Key file to write (default: <data dir>/shelter/keys/NAME.key).")]
    = None,
    data_dir: DataDir = None,
) -> None:
    """Make an X25519 (encryption) + Ed25519 (signing) key pair; private file 0600, public file NAME.key.pub."""
    path = out or _keys_dir(settings_for(data_dir)) / f"{name}.key"
    try:
        keys = make_keys(name)
        pub = save_keys(keys, path)
    except ValidationError as err:
        raise fail(f"--name {name!r}: {err.errors()[0]['msg']}") from err
    except FileExistsError as err:
        raise fail(f"{path} exists; not overwriting a key") from err
    typer.echo(f"private key: {path} (mode 0600, keep it)\npublic key:  {pub} (give this to the operator)")


@guardians_app.command("init")
def guardians_init(
    guardian: Annotated[list[Path], typer.Option(help="A guardian's .pub file; repeat for each.")],
    threshold: Annotated[int, typer.Option(help="Shares needed to reconstruct (k).")] = 3,
    approver: Annotated[list[Path] | None, typer.Option(
        help="A current guardian's key file, to sign this ceremony; repeat for k of them. Only needed once a key "
        "epoch exists (new guardians otherwise come by `shelter rotate`).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create the first key epoch: a new master key split k-of-n, each share sealed to its guardian."""
    s = settings_for(data_dir)
    try:
        gs = [load_guardian(p) for p in guardian]
    except WestworldError as err:
        raise fail(err.message) from err
    approvers = [_load_keys(p) for p in approver or []]

    async def work() -> str:
        epoch = await ops.init_guardians(await connect(s), s, gs, threshold, approvers)
        return (f"key epoch {epoch.epoch}: {epoch.threshold}-of-{len(epoch.guardians)}, master public key "
                f"{epoch.master_public_key[:16]}…; guardians: {', '.join(g.id for g in epoch.guardians)}")

    typer.echo(_run(s, work()))


@shelter_app.command()
def store(
    file: Annotated[Path, typer.Argument(help="The document to shelter.")],
    document_id: Annotated[str | None, typer.Option("--id", help="Document id (default: from the file name).")]
    = None,
    title: Annotated[str, typer.Option(help="A title (public: it is in the index).")] = "",
    network: Annotated[list[Network] | None, typer.Option(help="Replicate to (repeat); default all.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Encrypt a document under the current key epoch and replicate its ciphertext (IPFS, Arweave, Sia)."""
    s = settings_for(data_dir)
    doc_id = document_id or re.sub(r"[^a-z0-9._-]+", "-", file.stem.lower()).strip("-.")[:64]
    try:
        plaintext = file.read_bytes()
    except OSError as err:
        raise fail(f"{file}: cannot read: {err.strerror}") from err

    async def work() -> StoreDocumentState:
        return await ops.store_document(await connect(s), s, doc_id, title or file.name, plaintext, network)

    state = _run(s, work())
    typer.echo(f"stored {doc_id}: ciphertext SHA-256 {state.ciphertext_sha256}")
    for r in state.replicas:
        typer.echo(f"  {r.network.value:8} {r.state.value:15} {r.locator or r.detail}")


def _request(document_id: str, reason: str, key: Path, request_id: str | None) -> AccessRequest:
    keys = load_keys(key)
    return AccessRequest(request_id=request_id or ops.request_id_for(document_id), document_id=document_id,
                         requester=keys.id, requester_public_key=keys.public().encryption_public_key, reason=reason)


def _start(document_id: str, reason: str, key: Path, request_id: str | None, quorum: str | None, emergency: bool,
           data_dir: Path | None) -> None:
    s = settings_for(data_dir)
    try:
        req = _request(document_id, reason, key, request_id)
        terms = VoteTerms(quorum=quorum)
        ops.access_input(s, req, emergency=emergency, vote=terms)  # looser than the policy: refused before starting
    except WestworldError as err:
        raise fail(err.message) from err
    except ValidationError as err:
        e = err.errors()[0]
        raise fail(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}") from err

    async def work() -> str:
        client = await connect(s)
        return await ops.start_access(client, s, req, emergency=emergency, vote=terms)

    wf_id = _run(s, work())
    kind = "emergency vote, 2 h window" if emergency else "DAO vote, 72 h"
    typer.echo(f"started {wf_id} ({kind}); vote id: vote:{'emergency' if emergency else 'access'}-{req.request_id}\n"
               f"when granted: westworld shelter open {req.request_id} --key {key} --out FILE")


@shelter_app.command()
def request(
    document_id: str, reason: Annotated[str, typer.Option(help="Why (shown to voters).")], key: KeyFile,
    request_id: Annotated[str | None, typer.Option(help="Business key (default: derived).")] = None,
    quorum: Quorum = None, data_dir: DataDir = None,
) -> None:
    """Ask to open a document: a DAO vote (72 h), then k guardians' shares sealed to your key."""
    _start(document_id, reason, key, request_id, quorum, False, data_dir)


@shelter_app.command()
def emergency(
    document_id: str, reason: Annotated[str, typer.Option(help="Why (shown to voters).")], key: KeyFile,
    request_id: Annotated[str | None, typer.Option(help="Business key (default: derived).")] = None,
    quorum: Quorum = None, data_dir: DataDir = None,
) -> None:
    """Emergency access: a 2-hour window for an emergency vote and k guardians' approvals."""
    _start(document_id, reason, key, request_id, quorum, True, data_dir)


@shelter_app.command()
def pending(key: KeyFile, as_json: Json = False, data_dir: DataDir = None) -> None:
    """Requests and rotations waiting for your share or acknowledgement."""
    s = settings_for(data_dir)
    keys = _load_keys(key)

    async def work() -> list[ops.PendingItem]:
        return await ops.pending_for(await connect(s), keys)

    items = _run(s, work())
    if as_json:
        emit_json({"guardian": keys.id, "pending": [it for it in items if it.what != "unreachable"],
                   "unreachable": [it for it in items if it.what == "unreachable"]})
        return
    for it in items:
        if it.what == "unreachable":  # its worker is down: say so, and go on with the rest
            typer.echo(f"{it.workflow_id:40} {it.kind:26} {it.detail}", err=True)
            continue
        verb = "acknowledge" if it.what == "acknowledgement" else "submit-share"
        typer.echo(f"{it.workflow_id:40} {it.kind:26} waits for your {it.what}: "
                   f"westworld shelter {verb} {it.workflow_id} --key {key}"
                   + (f"\n{'':40} {it.detail}" if it.detail else ""))
    if not any(it.what != "unreachable" for it in items):
        typer.echo(f"nothing waits for {keys.id}")


def _answer(ref: str, key: Path, data_dir: Path | None, send: Answer) -> tuple[str, str, int]:
    """Send this guardian's answer (a share, or an acknowledgement) to ``ref``: (guardian id, workflow id, count)."""
    s = settings_for(data_dir)
    keys = _load_keys(key)

    async def work() -> tuple[str, int]:
        return await send(await connect(s), ref, keys)

    wf_id, n = _run(s, work())
    return keys.id, wf_id, n


@shelter_app.command("submit-share")
def submit_share(request_ref: str, key: KeyFile, data_dir: DataDir = None) -> None:
    """Decrypt your share locally, seal it to the requester (or rotation key), sign and submit it."""
    who, wf_id, n = _answer(request_ref, key, data_dir, ops.submit_share)
    typer.echo(f"accepted: {who}'s share is in {wf_id} ({n} so far)")


@shelter_app.command()
def acknowledge(rotation_ref: str, key: KeyFile, data_dir: DataDir = None) -> None:
    """As a new guardian: open your new share, check it, and prove it with a signed acknowledgement."""
    who, wf_id, n = _answer(rotation_ref, key, data_dir, ops.submit_ack)
    typer.echo(f"acknowledged: {who} holds a valid share of {wf_id}'s new epoch ({n} so far)")


@shelter_app.command("open")
def open_document(
    request_ref: str, key: KeyFile,
    out: Annotated[Path, typer.Option(help="Where to write the plaintext (mode 0600).")],
    data_dir: DataDir = None,
) -> None:
    """Reconstruct the key LOCALLY from the granted shares, fetch the ciphertext from a replica, decrypt."""
    from workers.cli.shelter_fetch import fetch_ciphertext

    s = settings_for(data_dir)
    keys = _load_keys(key)

    async def work() -> tuple[str, int, str]:
        from westworld.shelter_access import open_document as decrypt

        wf_id, result = await ops.access_result(await connect(s), request_ref)
        if result.document is None:
            raise Refused(f"{wf_id} was {result.decision.value}: {result.reason}")
        master = ops.reconstruct(keys, wf_id, result)
        blob, where = await fetch_ciphertext(s, result.document)
        plaintext = decrypt(master, result.document, blob)
        del master
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(plaintext)
        return wf_id, len(plaintext), where

    wf_id, size, where = _run(s, work())
    typer.echo(f"opened {wf_id}: {size} bytes written to {out} (ciphertext from {where}, key reconstructed here)")


async def _start_rotation(s: Settings, inp: GuardianRotationInput) -> str:
    """Start the rotation of the current key epoch (the worker reads the epoch: the CLI opens no database)."""
    import uuid

    from temporalio.client import WorkflowFailureError

    from workflows.shelter_read import CurrentKeyEpochWorkflow

    client: Client = await connect(s)
    read_id = key_epoch_read_id(str(uuid.uuid4()))
    try:
        current = await client.execute_workflow(CurrentKeyEpochWorkflow.run, id=read_id, task_queue=s.task_queue)
    except WorkflowFailureError as err:
        raise Refused("no key epoch yet: run `westworld shelter guardians init` first") from err
    epoch = await client.get_workflow_handle(read_id, result_type=int).query(
        CurrentKeyEpochWorkflow.epoch)
    if epoch is not None:  # refuse here a set the key cannot be split among (the workflow refuses it too)
        where = f"rotation of key epoch {current}"
        new = inp.new_guardians or [g for g in epoch.guardians if g.id not in set(inp.remove_guardians)]
        if inp.new_guardians or inp.remove_guardians:  # (an unknown id to remove: the workflow names the guardians)
            enough_guardians(where, max(epoch.threshold, _guardian_threshold_min(s)), new)
    return await ops.start_rotation(client, s, inp, current)


def _guardian_threshold_min(s: Settings) -> int:
    """The policy file's shelter.guardian_threshold_min, or 2 if it cannot be read here (the worker checks too)."""
    from activities.policy import read_policy_file

    try:
        return read_policy_file(s.policy_file).shelter.guardian_threshold_min
    except ValueError:
        return 2


@guardians_app.command("remove")
def guardians_remove(
    guardian_ids: Annotated[list[str], typer.Argument(help="The guardian id(s) that leave.")],
    share_window_days: Annotated[float, typer.Option(help="Days for current guardians to hand in shares.")] = 14,
    data_dir: DataDir = None,
) -> None:
    """Take guardians out of the shelter key: a guardian leaves only through a rotation, so this starts one to the
    current set less them (k unchanged). The DAO votes on the smaller set first; then k current guardians hand in
    shares and the remaining ones acknowledge theirs. Until the new epoch is active the leaver's share still counts."""
    s = settings_for(data_dir)
    inp = GuardianRotationInput(remove_guardians=guardian_ids, share_window=timedelta(days=share_window_days))
    wf_id = _run(s, _start_rotation(s, inp))
    typer.echo(f"started {wf_id}: the key moves to the current guardians less {', '.join(guardian_ids)}; the DAO "
               f"votes on that set first (`westworld shelter status {wf_id}` names the vote); then current guardians "
               f"hand in shares with `westworld shelter submit-share {wf_id} --key ...` and the remaining ones "
               f"`westworld shelter acknowledge {wf_id} --key ...`")


@shelter_app.command()
def rotate(
    guardian: Annotated[list[Path] | None, typer.Option(help="A new guardian's .pub file; repeat. "
                                                        "None: the same guardians get fresh shares.")] = None,
    rotate_master_key: Annotated[bool, typer.Option(help="Also a new master key; data keys re-wrapped.")] = False,
    next_: Annotated[bool, typer.Option("--next", help="Only register the set for the next scheduled rotation.")]
    = False,
    share_window_days: Annotated[float, typer.Option(help="Days for current guardians to hand in shares.")] = 14,
    data_dir: DataDir = None,
) -> None:
    """Move the shelter key to a new guardian set (now, or at the next scheduled rotation with --next).

    k stays the current epoch's (or the policy's shelter.guardian_threshold_min if higher); a new set is put to a
    DAO vote before any guardian is asked for a share."""
    s = settings_for(data_dir)
    try:
        gs = [load_guardian(p) for p in guardian or []]
    except WestworldError as err:
        raise fail(err.message) from err
    if next_:
        if not gs:
            raise fail("--next needs the new set: --guardian FILE.pub (repeat)")
        path = s.data_dir / "shelter" / "next-guardians.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([g.model_dump(mode="json") for g in gs], indent=2))
        typer.echo(f"registered {len(gs)} guardians for the next scheduled rotation ({path})")
        return
    inp = GuardianRotationInput(new_guardians=gs or None, rotate_master_key=rotate_master_key,
                                share_window=timedelta(days=share_window_days))
    wf_id = _run(s, _start_rotation(s, inp))
    vote = (f"the DAO votes on the new set first (`westworld shelter status {wf_id}` names the vote); then "
            if gs else "")
    typer.echo(f"started {wf_id}: {vote}current guardians hand in shares with `westworld shelter submit-share "
               f"{wf_id} --key ...`; new guardians then `westworld shelter acknowledge {wf_id} --key ...`")


@shelter_app.command()
def status(request_ref: str, as_json: Json = False, data_dir: DataDir = None) -> None:
    """Where a request or rotation stands."""
    s = settings_for(data_dir)
    if as_json:
        async def document() -> dict[str, Any]:
            return await ops.describe_document(await connect(s), request_ref)

        emit_json(_run(s, document()))
        return

    async def work() -> str:
        return await ops.describe(await connect(s), request_ref)

    typer.echo(_run(s, work()))
