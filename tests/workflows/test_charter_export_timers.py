"""DataExportWorkflow's 24 h promise, enforced by timers, time-skipped on a real Temporal server: an export that
cannot be built (Prometheus does not answer, so the activity keeps retrying) warns the committee at 12 h,
escalates at 20 h and opens a charter violation case at 24 h on its own; when Prometheus answers again, the
export is still delivered, marked overdue."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from nacl.public import PrivateKey

from tests.fixtures.harness import Harness, eventually
from tests.workflows.charter_rights_support import context, make_committee, write_charter
from westworld import keys
from westworld.chain import Deployment
from westworld.charter_cases import CaseSource, CaseState
from westworld.charter_data import ExportInput, ExportState
from westworld.charter_rights import ExportRequest, sign_export
from workers.settings import charter_gate_key_file
from workers.stack import processes
from workflows.data_export import DataExportWorkflow
from workflows.violation_report import ViolationReportWorkflow

COMMITTEE = make_committee()


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    charter = write_charter(tmp_path / "charter.yaml", COMMITTEE)
    return {"charter_file": charter, "prometheus_url": f"http://127.0.0.1:{processes.free_port()}",
            "ipfs_api_url": "http://127.0.0.1:9"}


def notices(h: Harness) -> list[dict[str, Any]]:
    path = h.settings.data_dir / "charter" / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_export_timers_warn_escalate_and_open_a_case(harness: Harness, deployment: Deployment) -> None:
    charter_gate_key_file(harness.settings).write_text(secrets.token_hex(32))
    user = Account.create("late-export")
    req = ExportRequest(subject=user.address, public_key=bytes(PrivateKey.generate().public_key).hex(), nonce=3,
                        expiry=2**40)
    req = req.model_copy(update={"signature": sign_export(req, context(deployment), user.key.hex())})
    wid = keys.export_id(user.address, 3)
    handle = await harness.skipper.client.start_workflow(DataExportWorkflow.run, ExportInput(request=req), id=wid,
                                                         task_queue=harness.task_queue)

    async def state() -> ExportState:
        return await handle.query(DataExportWorkflow.state)

    await eventually(state, lambda s: s.step == "building export")
    await harness.skipper.fast_forward(handle, timedelta(hours=11, minutes=50))
    s = await state()
    assert not s.warned and s.delivery is None
    await harness.skipper.fast_forward(handle, timedelta(minutes=20))  # 12 h 10 min
    await eventually(state, lambda s: s.warned)
    assert [n["kind"] for n in notices(harness)] == ["export.warning"]
    await harness.skipper.fast_forward(handle, timedelta(hours=8))  # 20 h 10 min
    await eventually(state, lambda s: s.escalated)
    await harness.skipper.fast_forward(handle, timedelta(hours=4))  # 24 h 10 min
    s = await eventually(state, lambda s: bool(s.violation_case))
    case = harness.client.get_workflow_handle(s.violation_case)
    opened = await eventually(lambda: case.query(ViolationReportWorkflow.status), lambda c: c.step != "opening",
                              not_yet=(Exception,))
    assert isinstance(opened, CaseState) and opened.source is CaseSource.SYSTEM
    assert "export.escalation" in [n["kind"] for n in notices(harness)]
    entries = [e.kind for e in await harness.resources.audit.latest(50) if e.subject in (user.address.lower(),
                                                                                          s.violation_case)]
    for kind in ("charter.export.requested", "charter.export.warning", "charter.export.escalated",
                 "charter.export.overdue", "charter.case.opened"):
        assert kind in entries
    assert (await case.describe()).parent_id == wid  # opened by the export itself: no caller can open one
    history = json.dumps((await case.fetch_history()).to_json_dict())
    assert "not delivered within" not in history  # what happened travels sealed to the committee
    await handle.terminate("test over")
    # the case inherits the skipped clock: nobody acknowledges or decides, so at 72 h it goes to a DAO vote, which
    # nobody votes in either (no quorum): the case closes unresolved, audited
    closed = await eventually(lambda: case.query(ViolationReportWorkflow.status), lambda c: c.step == "decided",
                              timeout=60)
    assert closed.escalated_to == keys.vote_id(keys.case_proposal_id(s.violation_case))
    assert closed.outcome == "unresolved" and closed.reminders == 4  # at 12, 36, 48 and 60 h
