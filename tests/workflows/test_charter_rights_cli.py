"""The `westworld charter export | report | cases` commands as a user runs them (subprocesses against a real worker
on a real Temporal server and anvil): an export requested, fetched and opened with the user's own key; a report
submitted (its receipt code printed once), followed with the code, claimed and decided by five members."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests.fixtures.fixed_ids import free_fixed_id
from tests.fixtures.harness import Harness, eventually
from tests.workflows.charter_rights_support import make_committee, write_charter
from westworld import keys
from westworld.charter_cases import receipt_hash
from westworld.charter_data import ExportState, read_bundle
from workflows.data_export import DataExportWorkflow

COMMITTEE = make_committee()


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"charter_file": write_charter(tmp_path / "charter.yaml", COMMITTEE),
            "ipfs_api_url": "http://127.0.0.1:9"}


async def cli(h: Harness, *args: str) -> str:
    s = h.settings
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(s.data_dir), "WESTWORLD_TEMPORAL_ADDRESS": s.temporal_address,
           "WESTWORLD_TASK_QUEUE": h.task_queue, "WESTWORLD_CHAIN_RPC_URL": s.chain_rpc_url,
           "WESTWORLD_CHARTER_FILE": str(s.charter_file), "WESTWORLD_IPFS_API_URL": s.ipfs_api_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", "charter", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert proc.returncode == 0, f"westworld charter {' '.join(args)} -> {proc.returncode}:\n{text}"
    return out.decode()


async def test_export_request_and_fetch(harness: Harness, tmp_path: Path) -> None:
    user = Account.create("cli-user")
    key_file, box_file, out = tmp_path / "user.key", tmp_path / "user.box", tmp_path / "bundle.zip"
    key_file.write_text(user.key.hex())
    export_id = (await cli(harness, "export", "request", "--key-file", str(key_file), "--box-key-file",
                           str(box_file))).strip()
    assert export_id.startswith(f"export:{user.address.lower()}:") and box_file.exists()
    handle = harness.client.get_workflow_handle(export_id)
    await eventually(lambda: handle.query(DataExportWorkflow.state), lambda s: isinstance(s, ExportState)
                     and s.delivery is not None, timeout=30)
    await cli(harness, "export", "fetch", export_id, "--box-key-file", str(box_file), "--out", str(out))
    assert zipfile.is_zipfile(out) and read_bundle(out.read_bytes())["subject"] == user.address.lower()


async def test_report_followed_and_decided_by_the_committee(harness: Harness, tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("A node exposes user_location on its /metrics.")
    # The intake has one fixed id on the session's shared server: one left running by another test (the charter
    # demo's) polls that test's task queue, whose worker is gone — the submit would wait on it forever.
    await free_fixed_id(harness.client, keys.REPORT_INTAKE_ID)
    out = await cli(harness, "report", "submit", str(report))
    found = re.search(r"case (case:[0-9a-f]{32})", out)
    assert found is not None
    case, code = found[1], out.strip().splitlines()[-1]
    assert keys.case_id(receipt_hash(code)) == case  # the code leads back to the case, and only it
    assert "awaiting acknowledgement" in await cli(harness, "report", "status", "--code", code)
    member_keys = []
    for i, member in enumerate(COMMITTEE.members[:5]):
        path = tmp_path / f"member{i}.key"
        path.write_text(member.key.hex())
        member_keys.append(path)
    assert "investigating" in await cli(harness, "cases", "claim", case, "--key-file", str(member_keys[0]))
    assert case in await cli(harness, "cases", "list")
    for path in member_keys:
        last = await cli(harness, "cases", "decide", case, "--outcome", "upheld", "--summary",
                         "Upheld: the series was removed.", "--key-file", str(path))
    assert "5 of 5 signatures" in last
    await eventually(lambda: cli(harness, "report", "status", "--code", code), lambda t: "outcome upheld" in t,
                     timeout=30)
    await harness.client.get_workflow_handle(keys.REPORT_INTAKE_ID).terminate("test over")
