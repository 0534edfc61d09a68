"""`westworld charter validate | show | diff | propose | status` in a subprocess, against the harness's chain (the
Charter deployed with the other contracts), its worker and a real charter gate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.charter_chain import DEFAULT_CHARTER_FILE
from tests.charter_support import charter_settings
from tests.fixtures.fixed_ids import free_fixed_id
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.conftest import Harness, eventually
from tests.workflows.test_cli_json import cli
from westworld.charter import charter_hash
from westworld.charter_sync import CharterSyncInput, CharterSyncState
from westworld.keys import CHARTER_SYNC_ID
from westworld.vote import DaoVoteInput, VoteBackend
from workers.cli.common import EXIT_FAILED, EXIT_OK
from workers.gate import server as charter_gate
from workflows.charter_sync import CharterSyncWorkflow


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer) -> dict[str, Any]:
    return charter_settings(prometheus)


def env(h: Harness) -> dict[str, str]:
    s = h.settings
    return {"WESTWORLD_CHARTER_GATE_PORT": str(s.charter_gate_port),
            "WESTWORLD_CHARTER_GATE_UDP_PORT": str(s.charter_gate_udp_port)}


def edited(tmp_path: Path, name: str, change: Any) -> Path:
    data = yaml.safe_load(DEFAULT_CHARTER_FILE.read_bytes())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_validate_lists_every_problem_and_diff_marks_widening(harness: Harness, tmp_path: Path) -> None:
    def break_it(d: dict[str, Any]) -> None:
        d["spec"]["metrics"][0]["name"] = "user_location"
        d["spec"]["metrics"][1]["retention_days"] = 0
        d["spec"]["committee"]["threshold"] = 1

    bad = edited(tmp_path, "bad.yaml", break_it)
    ran = await cli(harness, "charter", "validate", str(bad))
    assert ran.code == EXIT_FAILED
    for where in ("spec.metrics[0].name", "spec.metrics[1].retention_days", "spec.committee.threshold"):
        assert where in ran.err, ran.err
    ok = await cli(harness, "charter", "validate", str(DEFAULT_CHARTER_FILE), "--json")
    assert ok.code == EXIT_OK and ok.json()["sha256"] == charter_hash(DEFAULT_CHARTER_FILE.read_bytes())

    def widen(d: dict[str, Any]) -> None:
        d["spec"]["metrics"][0]["retention_days"] = 365

    wider = edited(tmp_path, "wider.yaml", widen)
    diff = (await cli(harness, "charter", "diff", str(DEFAULT_CHARTER_FILE), str(wider), "--json")).json()
    assert diff == [{"path": "metrics.mesh_link_quality.retention_days", "old": 30, "new": 365, "widens": True}]


async def test_show_says_whether_the_chain_holds_the_file(harness: Harness, tmp_path: Path) -> None:
    shown = (await cli(harness, "charter", "show", "--json", **env(harness))).json()
    assert shown["in_force"] is True and shown["on_chain"]["version"] == 1
    assert {m["name"] for m in shown["on_chain"]["metrics"]} == {m["name"] for m in shown["metrics"]}

    def purpose(d: dict[str, Any]) -> None:
        d["spec"]["metrics"][0]["purpose"] = "Something else."

    other = edited(tmp_path, "other.yaml", purpose)
    assert (await cli(harness, "charter", "show", str(other), "--json")).json()["in_force"] is False


async def test_propose_writes_a_governor_vote_with_the_amendment_calls(harness: Harness, tmp_path: Path) -> None:
    def v2(d: dict[str, Any]) -> None:
        d["metadata"]["version"] = 2
        d["spec"]["metrics"] = [m for m in d["spec"]["metrics"] if m["name"] != "mesh_user_session_seconds"]
        d["spec"]["metrics"][0]["retention_days"] = 14

    path = edited(tmp_path, "v2.yaml", v2)
    ran = await cli(harness, "charter", "propose", str(path))
    assert ran.code == EXIT_OK, ran.err
    inp = DaoVoteInput.model_validate_json(ran.out)
    assert inp.backend is VoteBackend.GOVERNOR
    calls = [(c.signature.split("(")[0], c.args) for c in inp.proposal.calls]
    assert calls == [("amend", [2, "0x" + charter_hash(path.read_bytes())]),
                     ("setMetric", ["mesh_link_quality", True, False, 14]),
                     ("setMetric", ["mesh_user_session_seconds", False, False, 0])]
    same = await cli(harness, "charter", "propose", str(DEFAULT_CHARTER_FILE))
    assert same.code == EXIT_FAILED and "bump metadata.version" in same.err


@pytest.fixture
async def gate(harness: Harness) -> AsyncIterator[charter_gate.RunningGate]:
    running = await charter_gate.start(harness.settings, kernel=False)
    try:
        yield running
    finally:
        await running.close()


async def test_status_shows_chain_sync_gate_and_kernel(harness: Harness, gate: charter_gate.RunningGate) -> None:
    del gate
    closed = (await cli(harness, "charter", "status", "--json", **env(harness))).json()
    assert closed["gate"]["charter"]["version"] == 0 and closed["sync"] is None
    await free_fixed_id(harness.client, CHARTER_SYNC_ID)
    handle = await harness.client.start_workflow(CharterSyncWorkflow.run, CharterSyncInput(poll_interval=1.0),
                                                 id=CHARTER_SYNC_ID, task_queue=harness.task_queue)
    try:
        await eventually(lambda: handle.query(CharterSyncWorkflow.state),
                         lambda s: isinstance(s, CharterSyncState) and s.applied_version == 1, timeout=30)
        text = await cli(harness, "charter", "status", **env(harness))
        assert "applied version 1" in text.out
        assert "charter: kernel filter not loaded (not requested (charter_kernel is off)); the userspace gate " \
               "enforces" in text.out, text.out
    finally:
        await free_fixed_id(harness.client, CHARTER_SYNC_ID, "test over")
