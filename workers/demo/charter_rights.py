"""The charter demo's second half: the users' rights on the live stack (run after the charter and the adversary).

1. **Consent**: a fresh user signs a grant for the consent-only metric; their node's samples reach Prometheus
   (pseudonymised); they sign a withdrawal; the gate and Prometheus's TSDB purge the series (Prometheus's API then
   returns no sample of it).
2. **Export**: the same user signs an export request; DataExportWorkflow delivers the bundle sealed to their X25519
   key; the demo opens it with that key and prints the records per section.
3. **Report**: an anonymous report is sealed to the committee's key (the charter's ``reports.committee_public_key``),
   its proof of work solved, and submitted with the reporter identity every reporter shares; a committee member
   opens it with the local committee key and claims the case, five members sign the decision, inside the 72 h
   window.
4. **Audit**: the entries each step left, read through the worker (AuditVerifyWorkflow), with their sequence numbers.

The committee's report key comes from `westworld up` at deploy time (workers/stack/committee.py says why not from a
DAO amendment in the demo).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey, SealedBox
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.http import open_http
from westworld import keys
from westworld.audit_trust import MAX_SHOWN, AuditVerifyInput
from westworld.charter import Charter, pseudonym
from westworld.charter_cases import CaseDecision, CaseResult, CaseState
from westworld.charter_consent import ConsentRequest, sign
from westworld.charter_data import ConsentInput, ConsentReceipt, ExportResult, read_bundle
from westworld.errors import DemoTimeout, NotConfigured, PermanentError
from workers.cli.charter_rights import (
    charter_context,
    fetch_export,
    prepare_report,
    reporter_client,
    request_export,
    signed_action,
    submit_report,
)
from workers.client import connect
from workers.settings import Settings, charter_gate_key_file
from workers.stack.committee import committee_key, committee_key_file
from workflows.audit_verify import AuditVerifyWorkflow
from workflows.charter_consent import CharterConsentWorkflow
from workflows.violation_report import ViolationReportWorkflow

Echo = Callable[[str], None]
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"  # the local chain's dev accounts
REPORT = ("A relay on the north hub logs which user roams to which node at night, outside the charter. "
          "I saw it in its config.")
SUMMARY = "Upheld: a node collected a blocked location metric; its operator removed it and the data was deleted."


def committee_members(charter: Charter) -> list[LocalAccount]:
    """The charter's committee members the local chain's mnemonic holds keys for (all 15 of the shipped charter)."""
    Account.enable_unaudited_hdwallet_features()
    wanted = {m.address.lower() for m in charter.spec.committee.members}
    found = [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(30)]
    return [a for a in found if a.address.lower() in wanted]


async def run_rights_demo(s: Settings, charter: Charter, echo: Echo) -> None:
    client = await connect(s)
    user = Account.create()
    echo(f"user {user.address} (a fresh key; signs their own consents and export request)")
    first_seq = await _consent(client, s, charter, user, echo)
    export_id = await _export(client, s, user, echo)
    try:
        case_id = await _report(client, s, charter, echo)
    except NotConfigured as err:  # a data dir from before the local committee key: said, not hidden
        echo(f"report: NOT SHOWN: {err.message}")
        case_id = ""
    await _audit(client, s, first_seq, {user.address.lower(), case_id, export_id}, echo)


async def _consent(client: Client, s: Settings, charter: Charter, user: LocalAccount, echo: Echo) -> int:
    metric = next((m.name for m in charter.spec.metrics if m.consent_required), None)
    if metric is None:
        raise NotConfigured(f"{s.charter_file} has no consent-only metric to show consent with")
    ctx = charter_context(s)

    async def submit(grant: bool, nonce: int) -> ConsentReceipt:
        req = ConsentRequest(subject=user.address, metric=metric, grant=grant, nonce=nonce,
                             expiry=int(time.time()) + 3600)
        req = req.model_copy(update={"signature": sign(req, ctx, user.key.hex())})
        receipt: ConsentReceipt = await client.execute_update_with_start_workflow(
            CharterConsentWorkflow.submit, req, start_workflow_operation=WithStartWorkflowOperation(
                CharterConsentWorkflow.run, ConsentInput(subject=user.address), id=keys.consent_id(user.address),
                task_queue=s.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING))
        return receipt

    label = charter.spec.consent.subject_label
    key = bytes.fromhex(charter_gate_key_file(s).read_text().strip())
    mark = pseudonym(key, charter.spec.pseudonymisation.key_epoch, label,
                     user.address)
    selector = f'{metric}{{{label}="{mark}"}}'
    granted = await submit(True, 1)
    echo(f"consent: {user.address[:10]}… signs a grant for {metric} (consent-only) -> gate {granted.applied.gate}, "
         f"audit #{granted.audit_seq}")
    async with open_http(10.0) as http:
        async def samples() -> int:
            answer = await http.get(f"{s.resolved_prometheus_url}/api/v1/query",
                                    params={"query": f"count_over_time({selector}[1h])"})
            return len(answer.json()["data"]["result"])

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            deadline = time.monotonic() + 60
            while not await samples():
                if time.monotonic() > deadline:
                    raise DemoTimeout(f"the consented series {selector} did not reach Prometheus within 60 s")
                sock.sendto(f"{metric}:{int(time.time()) % 3600}|g|#node:demo-node,{label}:{user.address}".encode(),
                            (s.charter_gate_host, s.charter_gate_udp_port))
                await asyncio.sleep(max(s.prometheus_scrape_interval / 2, 0.5))
        echo(f"  Prometheus holds {selector} (the address pseudonymised by the gate)")
        withdrawn = await submit(False, 2)
        a = withdrawn.applied
        left = await samples()
    if left:
        raise PermanentError(f"after the withdrawal Prometheus still holds samples of {selector}")
    echo(f"consent withdrawn -> purged {a.gate_series_purged} series at the gate and {a.prometheus_series_purged} in "
         f"Prometheus (delete_series + clean_tombstones) in {a.purge_seconds * 1000:.0f} ms; Prometheus's API now "
         f"returns no sample of it; audit #{withdrawn.audit_seq}")
    return granted.audit_seq


async def _export(client: Client, s: Settings, user: LocalAccount, echo: Echo) -> str:
    box = PrivateKey.generate()
    started = time.monotonic()
    export_id = await request_export(client, s, user.key.hex(), box)
    result: ExportResult = await client.get_workflow_handle(export_id, result_type=ExportResult).result()
    seconds = time.monotonic() - started
    d = result.delivery
    echo(f"export {export_id}: signed request -> delivered in {seconds:.1f} s (24 h promise; overdue "
         f"{result.overdue}), {d.size} bytes sealed to the user's X25519 key, {d.records} records, "
         + (f"IPFS {d.cid}" if d.cid else "data dir only (IPFS did not take it)"))
    bundle = read_bundle(await fetch_export(client, s, export_id, box))
    counts = ", ".join(f"{x['name']} {len(x['rows'])}" for x in bundle["sections"])
    echo(f"  opened with the user's key: subject {bundle['subject']}; {counts}; files {bundle['csv_files']}")
    return export_id


async def _report(client: Client, s: Settings, charter: Charter, echo: Echo) -> str:
    reports = charter.spec.reports
    if not reports.committee_public_key:
        raise NotConfigured(f"{s.charter_file} names no reports.committee_public_key: `westworld up` makes one for "
                            "a fresh data dir (workers/stack/committee.py); an older one needs an amendment")
    members = committee_members(charter)
    k = charter.spec.committee.threshold
    if len(members) < k:
        raise NotConfigured(f"the demo holds keys for {len(members)} committee members, fewer than k = {k}")
    echo(f"committee: {len(charter.spec.committee.members)} members, {k} to decide; report key "
         f"{reports.committee_public_key[:16]}… made by `westworld up` at deploy time ({committee_key_file(s)}) and "
         "in the charter whose hash is on chain (not by a DAO amendment: see docs/charter-rights.md)")
    started = time.monotonic()
    code, submission = prepare_report(REPORT, reports.committee_public_key, reports.pow_bits)
    pow_seconds = time.monotonic() - started
    case_id = await submit_report(await reporter_client(s), s.task_queue, submission)
    echo(f"report: sealed to the committee key, proof of work ({reports.pow_bits} bits, nonce {submission.pow_nonce}) "
         f"in {pow_seconds:.1f} s, submitted as the shared reporter identity -> {case_id}; the reporter keeps a "
         f"{len(code)}-character receipt code (not printed: it is the only way back to the case)")
    case = client.get_workflow_handle(case_id)
    await _case_state(case)
    opened = SealedBox(committee_key(s)).decrypt(base64.b64decode(submission.sealed_report)).decode()
    state = await case.execute_update(ViolationReportWorkflow.claim,
                                      signed_action(s, case_id, "claim", members[0].key.hex(), case_id))
    echo(f"  {members[0].address[:10]}… opens it with the committee key ({opened[:40]!r}…) and claims the case: "
         f"{state.step}; deadline {state.deadline:%Y-%m-%d %H:%M} UTC")
    for member in members[:k]:
        state = await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
            action=signed_action(s, case_id, "decide:upheld", member.key.hex(), SUMMARY), summary=SUMMARY))
    result: CaseResult = await client.get_workflow_handle(case_id, result_type=CaseResult).result()
    now = datetime.now(UTC)
    echo(f"  decided {result.outcome!r} by {len(result.decided_by)} signatures at {now:%H:%M:%S} UTC, "
         f"{time.monotonic() - started:.1f} s after submission, inside the 72 h window (deadline "
         f"{state.deadline:%Y-%m-%d %H:%M} UTC); published: "
         f"{result.summary!r}; audit #{result.audit_seq}")
    return case_id


async def _case_state(case: WorkflowHandle[Any, Any]) -> CaseState:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(Exception):  # the intake starts the case as its child: not there for a moment
            state: CaseState = await case.query(ViolationReportWorkflow.status)
            if state.threshold:
                return state
        if time.monotonic() > deadline:
            raise DemoTimeout(f"the case {case.id} did not start within 30 s")
        await asyncio.sleep(0.3)


async def _audit(client: Client, s: Settings, first_seq: int, subjects: set[str], echo: Echo) -> None:
    found = await client.execute_workflow(AuditVerifyWorkflow.run, AuditVerifyInput(last=MAX_SHOWN),
                                          id=keys.audit_verify_id(str(uuid.uuid4())), task_queue=s.task_queue)
    mine = [e for e in found.entries if e.seq >= first_seq and e.subject.lower() in subjects]
    echo(f"audit log ({'verified' if found.report.ok else 'FAILED verification'}, {found.report.tree_size} entries): "
         + ", ".join(f"#{e.seq} {e.kind}" for e in mine))
