"""`westworld audit verify | show`: through the worker (a client of Temporal), or offline on a copy of the log.

Online (the default) the CLI opens neither the project database nor the worker's keys: it runs
:class:`workflows.audit_verify.AuditVerifyWorkflow`, whose activity verifies the log in the worker against its
signed heads and the chain anchor, then checks the report itself against the latest anchor it reads from the
chain: the worker must have used that anchor, and the report's consistency proof must lead from it to the
reported head. Offline (``--log-file``) an independent verifier holding a copy of the log (and of its heads file
and public key) checks it without the worker.

Exit codes (workers/cli/common.py): 0 verified, 4 the log failed verification, 1 the request was refused (no such
log, ...), 3 the stack does not answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from activities.anchor import read_latest_anchor
from activities.audit_file import read_log_file
from activities.audit_heads import HEADS_FILE, PUBLIC_KEY_FILE, read_heads
from activities.chain import load_deployment
from activities.sql.audit_log import readable_entry
from westworld.audit import AuditEntry, VerifyReport
from westworld.audit_anchor import AnchoredHead
from westworld.audit_trust import AuditVerifyInput, AuditVerifyResult, verify_log
from westworld.errors import InvalidInput, Refused, WestworldError
from westworld.keys import audit_verify_id
from workers.cli.common import EXIT_NO, EXIT_OK
from workers.cli.output import emit_json
from workers.client import connect
from workers.settings import Settings
from workflows.audit_verify import AuditVerifyWorkflow

Echo = Callable[[str], None]
VERIFIED, FAILED = EXIT_OK, EXIT_NO


async def _through_worker(s: Settings, last: int) -> AuditVerifyResult:
    if not s.data_dir.is_dir():
        raise Refused(f"no audit log at {s.data_dir}: no such data directory (a copy of a log: --log-file)")
    client = await connect(s)  # not configured or unreachable: the CLI's typed exits (1, 3)
    try:
        return await client.execute_workflow(
            AuditVerifyWorkflow.run, AuditVerifyInput(last=last), id=audit_verify_id(str(uuid.uuid4())),
            task_queue=s.task_queue, execution_timeout=timedelta(minutes=15),
        )
    except Exception as err:  # the workflow failed or the server stopped answering: name it, no traceback
        raise Refused(f"the worker could not verify the audit log: {type(err).__name__}: {err}") from err


async def _chain_anchor(s: Settings, log_key: str) -> tuple[AnchoredHead | None, str]:
    """The latest anchor of ``log_key`` read from the chain by this CLI, and a line saying where it looked."""
    try:
        sender = load_deployment(s.contracts_file, s.chain_rpc_url).deployer
    except WestworldError as err:
        raise Refused(f"cannot check the chain anchor: {err.message} (--no-chain skips it)") from err
    try:
        anchor = await read_latest_anchor(s.chain_rpc_url, sender, log_key)
    except Exception as err:
        raise Refused(f"cannot read the chain at {s.chain_rpc_url}: {type(err).__name__}: {err} "
                      f"(--no-chain skips the anchor)") from err
    return anchor, f"anchors sent by {sender} on {s.chain_rpc_url} for log key {log_key[:16]}…"


def check_against_chain(report: VerifyReport, chain: AnchoredHead | None) -> list[str]:
    """What is wrong with a worker's report given the anchor this client read from the chain itself."""
    if chain is None:
        return [] if report.anchor is None else [
            f"the worker checked against an anchor (tx {report.anchor.tx_hash}) the chain does not have"]
    if report.anchor != chain:
        used = f"tx {report.anchor.tx_hash} (size {report.anchor.tree_size})" if report.anchor else "no anchor"
        return [f"the chain's latest anchor is tx {chain.tx_hash} (size {chain.tree_size}) but the worker used {used}"]
    proof = report.anchor_proof
    if proof is None:
        return [] if report.problems else ["the report carries no consistency proof from the chain anchor"]
    if (proof.old_size, proof.old_root, proof.new_size, proof.new_root) != (
            chain.tree_size, chain.root, report.tree_size, report.root) or not proof.verify():
        return [f"the consistency proof from the chain anchor (size {chain.tree_size}) to the reported head "
                f"(size {report.tree_size}) does not verify: the reported head does not extend the anchored one"]
    return []


def render(report: VerifyReport, extra: list[str], notes: list[str], echo: Echo, as_json: bool = False) -> int:
    """Print the report (one JSON document with ``as_json``); the exit code."""
    if as_json:
        emit_json({"ok": report.ok and not extra, "report": report, "chain_problems": extra, "checked_here": notes})
        return VERIFIED if report.ok and not extra else FAILED
    if report.log_key:
        echo(f"  log key: {report.log_key}")
    for line in [*report.checked, *notes]:
        echo(f"  checked: {line}")
    if not report.checked and not notes:
        echo("  WARNING: checked against nothing but itself (no signed heads, no chain anchor): a truncated or "
             "rehashed log cannot be detected")
    if report.ok and not extra:
        echo(f"audit log OK: {report.tree_size} entries, root {report.root}")
        return VERIFIED
    echo(f"audit log FAILED verification: {len(report.problems) + report.omitted_problems + len(extra)} problem(s)")
    for p in report.problems:
        echo(f"  entry {p.seq}: {p.kind}: {p.message}" if p.seq >= 0 else f"  {p.kind}: {p.message}")
    if report.omitted_problems:
        echo(f"  ... and {report.omitted_problems} more (the report lists the first {len(report.problems)})")
    for line in extra:
        echo(f"  chain: {line}")
    return FAILED


async def verify(s: Settings, echo: Echo, use_chain: bool = True, as_json: bool = False) -> int:
    """Verify through the worker, then check its report against the chain anchor read here."""
    report = (await _through_worker(s, 0)).report
    extra: list[str] = []
    notes: list[str] = []
    if use_chain and report.log_key:
        chain, where = await _chain_anchor(s, report.log_key)
        extra = check_against_chain(report, chain)
        notes.append(f"by this CLI: {where}: " + (f"tx {chain.tx_hash}, size {chain.tree_size}" if chain
                                                 else "none yet"))
    return render(report, extra, notes, echo, as_json)


def _offline_key(log_file: Path, public_key: str | None) -> str:
    if public_key:
        return public_key.strip()
    pub = log_file.parent / PUBLIC_KEY_FILE
    return pub.read_text().strip() if pub.is_file() else ""


async def verify_file(
    s: Settings, log_file: Path, heads_file: Path | None, public_key: str | None, use_chain: bool, echo: Echo,
    as_json: bool = False,
) -> int:
    """Verify a copy of the log without the worker (its heads file and public key beside it, or as given)."""
    try:
        entries = read_log_file(log_file)
    except InvalidInput as err:
        raise Refused(err.message) from err
    key = _offline_key(log_file, public_key)
    heads_path = heads_file or log_file.parent / HEADS_FILE
    if heads_file is not None and not heads_file.is_file():
        raise Refused(f"no signed heads at {heads_file}")
    if heads_path.is_file() and not key:
        raise Refused(f"cannot check the signed heads in {heads_path} without the log's public key (--public-key)")
    anchor, notes = None, []
    if use_chain and key:
        anchor, where = await _chain_anchor(s, key)
        notes.append(f"{where}: " + (f"tx {anchor.tx_hash}, size {anchor.tree_size}" if anchor else "none yet"))
    report = verify_log(entries, heads=read_heads(heads_path) if key else None, public_key=key, anchor=anchor)
    return render(report, [], notes, echo, as_json)


def _print_entries(entries: list[AuditEntry], echo: Echo) -> None:
    for e in entries:
        when = f"{e.created_at:%Y-%m-%d %H:%M:%S}" if e.problem is None else "UNREADABLE"
        tail = f"  ({e.problem})" if e.problem else ""
        echo(f"#{e.seq} {when} {e.kind:18} {e.subject}  leaf {e.leaf_hash[:16]}…{tail}")


async def show(s: Settings, last: int, echo: Echo, log_file: Path | None = None, as_json: bool = False) -> int:
    """The latest entries with the current root (through the worker, or from a copy of the log)."""
    if last < 1:
        raise Refused(f"--last must be a positive number of entries, not {last}")
    if log_file is not None:
        try:
            entries = read_log_file(log_file)
        except InvalidInput as err:
            raise Refused(err.message) from err
        shown = [readable_entry(e) for e in entries[-last:]]
        report = verify_log(entries)
    else:
        result = await _through_worker(s, last)
        shown, report = result.entries, result.report
    if as_json:
        emit_json({"entries": shown, "root": report.root, "tree_size": report.tree_size, "ok": report.ok,
                   "problems": report.problems})
        return VERIFIED if report.ok else FAILED
    _print_entries(shown, echo)
    state = "verified" if report.ok else f"FAILED verification ({len(report.problems)} problem(s)): " \
                                         f"run `westworld audit verify`"
    echo(f"root {report.root} ({report.tree_size} entries, {state})")
    return VERIFIED if report.ok else FAILED
