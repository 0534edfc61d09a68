"""Replay every saved history against today's workflow code: a non-deterministic change fails here.

Histories are recorded by running the workflow tests with ``WESTWORLD_RECORD_HISTORIES=1``; each history is
saved with the (test-only) key ring its payloads were encrypted with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workers.codec import build_data_converter, load_keyring
from workers.worker import WORKFLOWS
from workflows.runner_sandbox import workflow_runner

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.history.json"))


def test_histories_exist_for_every_shipped_workflow() -> None:
    recorded = {f.name.split("--")[0] for f in FILES}
    missing = {w.__name__ for w in WORKFLOWS} - recorded
    assert not missing, f"no saved history for: {sorted(missing)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
async def test_replay(path: Path) -> None:
    keyring = load_keyring(path.with_name(path.name.replace(".history.json", ".keyring.json")))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=build_data_converter(keyring),
                        workflow_runner=workflow_runner())
    text = path.read_text()
    # the real workflow id when the history names it: a signature bound to its target id verifies only under it
    started = json.loads(text)["events"][0].get("workflowExecutionStartedEventAttributes", {})
    history = WorkflowHistory.from_json(started.get("workflowId") or path.stem, text)
    await replayer.replay_workflow(history)
