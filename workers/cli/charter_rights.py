"""`westworld charter export | report | cases`: the users' rights, as a client of Temporal.

* ``export request | status | fetch``: a user signs an export request with their Ethereum key, names an X25519
  key (created in a file if missing) the bundle is sealed to, follows it, and fetches and opens the bundle.
* ``report submit | status | answer``: anonymous reports. The report is sealed to the committee's key (from the
  charter) here, before anything leaves; a random receipt code is printed once and is the only way back to the
  case; the proof of work runs here; the connection uses a fixed client identity (no host name, no pid).
* ``cases list | show | claim | note | decide``: the committee, each action signed (EIP-712) with the member's key.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from nacl.public import PrivateKey, PublicKey, SealedBox
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from activities.chain_tx import load_deployment
from activities.charter_chain import read_charter_file
from activities.charter_rights import open_bundle
from activities.storage.ipfs import IpfsClient
from westworld import keys
from westworld.chain import CHARTER, TIMELOCK, TOKEN_SYMBOL
from westworld.charter_cases import (
    CaseDecision,
    CaseNote,
    CaseResult,
    CaseState,
    IntakeInput,
    ReporterAnswer,
    ReportSubmission,
    answer_message,
    bounty_vote,
    receipt_hash,
    reporter_box_key,
    reporter_sign_key,
    solve_pow,
)
from westworld.charter_consent import ConsentContext
from westworld.charter_data import ExportInput, ExportState
from westworld.charter_rights import CaseAction, ExportRequest, sha256_hex, sign_case_action, sign_export
from westworld.errors import CaseRefused
from workers.cli.common import DataDir, fail, settings_for
from workers.cli.vote import read_key
from workers.cli.vote_power import parse_tokens, tokens
from workers.client import connect
from workers.codec import build_data_converter, load_keyring
from workers.settings import Settings
from workers.stack.contracts import voting_power_of
from workflows.data_export import DataExportWorkflow
from workflows.violation_intake import ViolationIntakeWorkflow
from workflows.violation_report import ViolationReportWorkflow

REPORTER_IDENTITY = "westworld-reporter"  # the client identity Temporal records for a reporter: the same for all
export_app = typer.Typer(help="Your data: everything held about you, sealed to your key, within 24 h.")
report_app = typer.Typer(help="Report a charter violation anonymously, follow it with your receipt code.")
cases_app = typer.Typer(help="The charter committee's cases: claim, note, decide (k-of-n signatures).")
KeyFile = Annotated[Path, typer.Option("--key-file", help="Your Ethereum private key (hex) in a file.")]


def charter_context(s: Settings) -> ConsentContext:
    deployment = load_deployment(s.contracts_file)
    return ConsentContext(chain_id=deployment.chain_id, charter_address=deployment.address(CHARTER))


def box_key(path: Path) -> PrivateKey:
    """The X25519 key in ``path`` (hex), created (mode 0600) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(bytes(PrivateKey.generate()).hex())
    return PrivateKey(bytes.fromhex(path.read_text().strip()))


# -- export --------------------------------------------------------------------------------------------------

async def request_export(client: Client, s: Settings, key: str, box: PrivateKey, nonce: int | None = None) -> str:
    from eth_account import Account

    req = ExportRequest(subject=Account.from_key(key).address, public_key=bytes(box.public_key).hex(),
                        nonce=time.time_ns() if nonce is None else nonce, expiry=int(time.time()) + 3600)
    req = req.model_copy(update={"signature": sign_export(req, charter_context(s), key)})
    handle = await client.start_workflow(DataExportWorkflow.run, ExportInput(request=req),
                                         id=keys.export_id(req.subject, req.nonce), task_queue=s.task_queue,
                                         id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return handle.id


async def fetch_export(client: Client, s: Settings, export_id: str, box: PrivateKey) -> bytes:
    state: ExportState = await client.get_workflow_handle(export_id).query(DataExportWorkflow.state)
    if state.delivery is None:
        raise fail(f"{export_id} is not delivered yet ({state.step})")
    path = Path(state.delivery.file)
    sealed = path.read_bytes() if path.exists() else None
    if sealed is None and state.delivery.cid:
        sealed = await IpfsClient(s.ipfs_api_url).cat(state.delivery.cid, timeout_s=30)
    if sealed is None:
        raise fail(f"the bundle is neither at {path} nor on IPFS ({state.delivery.cid or 'not pinned'})")
    return open_bundle(sealed, bytes(box))


@export_app.command("request")
def export_request(key_file: KeyFile, box_file: Annotated[Path, typer.Option(
        "--box-key-file", help="Your X25519 key (hex) the bundle is sealed to; created if missing.")],
                   data_dir: DataDir = None) -> None:
    """Ask for everything held about you (signed with your key); prints the export id."""
    s = settings_for(data_dir)
    key, box = read_key(key_file), box_key(box_file)
    typer.echo(asyncio.run(_with_client(s, lambda c: request_export(c, s, key, box))))


@export_app.command("status")
def export_status(export_id: str, data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    state: ExportState = asyncio.run(_with_client(s, lambda c: c.get_workflow_handle(export_id).query(
        DataExportWorkflow.state)))
    typer.echo(state.model_dump_json(indent=2))


@export_app.command("fetch")
def export_fetch(export_id: str, box_file: Annotated[Path, typer.Option("--box-key-file")],
                 out: Annotated[Path, typer.Option("--out", help="Where to write the opened bundle (zip).")],
                 data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    out.write_bytes(asyncio.run(_with_client(s, lambda c: fetch_export(c, s, export_id, box_key(box_file)))))
    typer.echo(f"{out}: bundle.json and one CSV per kind of record")


async def _with_client(s: Settings, fn: Any) -> Any:
    return await fn(await connect(s))


# -- reports -------------------------------------------------------------------------------------------------

async def reporter_client(s: Settings) -> Client:
    """A client whose recorded identity is the same word for every reporter (never host or pid)."""
    key_file = s.resolved_codec_key_file
    return await Client.connect(s.temporal_address, namespace=s.temporal_namespace, identity=REPORTER_IDENTITY,
                                data_converter=build_data_converter(load_keyring(key_file), key_file=key_file))


def prepare_report(text: str, committee_key: str, bits: int) -> tuple[str, ReportSubmission]:
    """Seal, draw the receipt code, derive the reporter's keys, prove the work: (code, submission)."""
    code = secrets.token_urlsafe(24)
    sealed = base64.b64encode(SealedBox(PublicKey(bytes.fromhex(committee_key))).encrypt(text.encode())).decode()
    receipt = receipt_hash(code)
    return code, ReportSubmission(
        sealed_report=sealed, receipt_hash=receipt, reporter_box_key=bytes(reporter_box_key(code).public_key).hex(),
        reporter_verify_key=bytes(reporter_sign_key(code).verify_key).hex(), pow_nonce=solve_pow(receipt, sealed, bits))


async def submit_report(client: Client, task_queue: str, report: ReportSubmission) -> str:
    case: str = await client.execute_update_with_start_workflow(
        ViolationIntakeWorkflow.submit, report, start_workflow_operation=WithStartWorkflowOperation(
            ViolationIntakeWorkflow.run, IntakeInput(), id=keys.REPORT_INTAKE_ID, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING))
    return case


def answer_for(code: str, text: str, committee_key: str) -> ReporterAnswer:
    sealed = base64.b64encode(SealedBox(PublicKey(bytes.fromhex(committee_key))).encrypt(text.encode())).decode()
    case = keys.case_id(receipt_hash(code))
    return ReporterAnswer(sealed=sealed, signature=reporter_sign_key(code).sign(answer_message(case, sealed))
                          .signature.hex())


@report_app.command("submit")
def report_submit(file: Annotated[Path, typer.Argument(help="The report (text), sealed here before it leaves.")],
                  data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    charter = read_charter_file(s.charter_file)[1].spec.reports
    if not charter.committee_public_key:
        raise fail(f"{s.charter_file} names no reports.committee_public_key: reports cannot be sealed")
    code, report = prepare_report(file.read_text(), charter.committee_public_key, charter.pow_bits)

    async def go() -> str:
        return await submit_report(await reporter_client(s), s.task_queue, report)

    case = asyncio.run(go())
    typer.echo(f"case {case}\nyour receipt code (shown once; keep it secret, it is your only way back):\n{code}")


@report_app.command("status")
def report_status(code: Annotated[str, typer.Option("--code", prompt=True, hide_input=True)],
                  data_dir: DataDir = None) -> None:
    """The case's state; the committee's questions opened with your receipt code."""
    s = settings_for(data_dir)

    async def go() -> CaseState:
        state: CaseState = await (await reporter_client(s)).get_workflow_handle(
            keys.case_id(receipt_hash(code))).query(ViolationReportWorkflow.status)
        return state

    state, box = asyncio.run(go()), SealedBox(reporter_box_key(code))
    typer.echo(f"{state.case_id}: {state.step}; deadline {state.deadline:%Y-%m-%d %H:%M} UTC"
               + (f"; outcome {state.outcome}: {state.summary}" if state.outcome else ""))
    for e in state.entries:
        if e.kind == "question":
            typer.echo(f"question ({e.at:%Y-%m-%d %H:%M}): {box.decrypt(base64.b64decode(e.sealed)).decode()}")


@report_app.command("answer")
def report_answer(text: str, code: Annotated[str, typer.Option("--code", prompt=True, hide_input=True)],
                  data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    committee_key = read_charter_file(s.charter_file)[1].spec.reports.committee_public_key

    async def go() -> None:
        await (await reporter_client(s)).get_workflow_handle(keys.case_id(receipt_hash(code))).execute_update(
            ViolationReportWorkflow.answer, answer_for(code, text, committee_key))

    asyncio.run(go())
    typer.echo("answer sent, sealed to the committee")


# -- committee -----------------------------------------------------------------------------------------------

def signed_action(s: Settings, case: str, verb: str, key: str, about: str) -> CaseAction:
    from eth_account import Account

    a = CaseAction(case_id=case, action=verb, member=Account.from_key(key).address, digest=sha256_hex(about))
    return a.model_copy(update={"signature": sign_case_action(a, charter_context(s), key)})


def _update(s: Settings, case: str, update: Any, arg: Any) -> CaseState:
    async def go() -> CaseState:
        state: CaseState = await (await connect(s)).get_workflow_handle(case).execute_update(update, arg)
        return state

    return asyncio.run(go())


@cases_app.command("list")
def cases_list(data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)

    async def go() -> list[str]:
        client = await connect(s)
        return [f"{w.id}  {w.status.name if w.status else ''}  opened {w.start_time:%Y-%m-%d %H:%M}" async for w in
                client.list_workflows(f'WorkflowType = "{ViolationReportWorkflow.__name__}"')]

    for line in asyncio.run(go()):
        typer.echo(line)


@cases_app.command("claim")
def cases_claim(case: str, key_file: KeyFile, data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    state = _update(s, case, ViolationReportWorkflow.claim, signed_action(s, case, "claim", read_key(key_file), case))
    typer.echo(f"{case}: {state.step}, acknowledged by {state.acknowledged_by}")


@cases_app.command("note")
def cases_note(case: str, text: str, key_file: KeyFile, to_reporter: bool = False, data_dir: DataDir = None) -> None:
    """A note sealed to the committee, or (--to-reporter) a question sealed to the reporter's receipt key."""
    s = settings_for(data_dir)

    committee_key = read_charter_file(s.charter_file)[1].spec.reports.committee_public_key
    key = committee_key if not to_reporter else asyncio.run(_reporter_box_key(s, case))
    sealed = base64.b64encode(SealedBox(PublicKey(bytes.fromhex(key))).encrypt(text.encode())).decode()
    note = CaseNote(action=signed_action(s, case, "note", read_key(key_file), sealed), sealed=sealed,
                    to_reporter=to_reporter)
    state = _update(s, case, ViolationReportWorkflow.note, note)
    typer.echo(f"{case}: {len(state.entries)} entries")


async def _reporter_box_key(s: Settings, case: str) -> str:
    state: CaseState = await (await connect(s)).get_workflow_handle(case).query(ViolationReportWorkflow.status)
    return state.reporter_box_key


@cases_app.command("decide")
def cases_decide(case: str, outcome: Annotated[str, typer.Option(help="upheld | dismissed")],
                 summary: Annotated[str, typer.Option(help="The redacted outcome, published as is.")],
                 key_file: KeyFile, data_dir: DataDir = None) -> None:
    s = settings_for(data_dir)
    decision = CaseDecision(action=signed_action(s, case, f"decide:{outcome}", read_key(key_file), summary),
                            summary=summary)
    state = _update(s, case, ViolationReportWorkflow.decide, decision)
    typer.echo(f"{case}: {len(state.decision_signatures)} of {state.threshold} signatures"
               + (f"; decided: {state.outcome}" if state.outcome else ""))


@cases_app.command("bounty")
def cases_bounty(
    case: str,
    to: Annotated[str, typer.Option("--to", help="The address the reporter gave (in a sealed answer) for the bounty.")],
    amount: Annotated[str, typer.Option("--tokens", help=f"The bounty in {TOKEN_SYMBOL} (e.g. 500 or 0.5).")],
    out: Annotated[Path | None, typer.Option(help="Write the vote input here (JSON) instead of printing it.")] = None,
    proposal_id: Annotated[str | None, typer.Option("--id", help="Proposal id (default: bounty-<case>).")] = None,
    data_dir: DataDir = None,
) -> None:
    """A governor-backend DaoVoteInput paying a bounty for an UPHELD case from the DAO treasury (the timelock):
    start it with `westworld vote propose`; if the DAO approves, the timelock executes the transfer."""
    s = settings_for(data_dir)
    wei = parse_tokens(amount)

    async def go() -> tuple[CaseResult, int, str]:
        handle = (await connect(s)).get_workflow_handle(case, result_type=CaseResult)
        try:
            status = (await handle.describe()).status
        except RPCError as err:
            raise fail(f"no case {case} ({err.message})") from None
        if status != WorkflowExecutionStatus.COMPLETED:
            raise fail(f"{case} is not decided yet ({status.name if status else 'unknown'}): a bounty follows an "
                       "upheld decision")
        result = await handle.result()
        dep = load_deployment(s.contracts_file, s.chain_rpc_url)
        treasury = dep.address(TIMELOCK)
        held, _, _ = await voting_power_of(s.chain_rpc_url, dep, treasury)
        return result, held, treasury

    result, held, treasury = asyncio.run(go())
    try:
        inp = bounty_vote(result, to, wei, proposal_id)
    except CaseRefused as err:
        raise fail(str(err)) from None
    if held < wei:
        raise fail(f"the DAO treasury (the timelock {treasury}) holds {tokens(held)} {TOKEN_SYMBOL}, fewer than the "
                   f"{tokens(wei)} asked: it cannot pay this bounty (fund the treasury first; on the local dev "
                   f"chain: `westworld vote faucet {treasury} --tokens N`)")
    text = inp.model_dump_json(indent=2, exclude_none=True)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n")
    typer.echo(f"wrote {out}: start the vote with `westworld vote propose {out}` (treasury holds {tokens(held)} "
               f"{TOKEN_SYMBOL})")
