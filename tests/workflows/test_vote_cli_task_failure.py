"""`westworld vote propose` and `vote status` on a vote whose workflow task fails (the worker's code raises, so the
server answers every query with "Workflow Task in failed state"): one `error: ...` line naming the workflow, the
cause and where to look, exit 1 (``EXIT_FAILED``), never a traceback. Real Temporal server, the CLI as a
subprocess, a worker whose DaoVoteWorkflow is broken on purpose."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from workers.cli.common import EXIT_FAILED
from workers.codec import build_data_converter, create_keyring, load_keyring

BROKEN = "the vote code was changed under a running vote"


@workflow.defn(name="DaoVoteWorkflow")
class BrokenVoteWorkflow:
    """Stands for a worker whose vote code fails (a bug, a non-deterministic change): its workflow task fails."""

    @workflow.run
    async def run(self, _inp: object) -> None:
        raise RuntimeError(BROKEN)


async def westworld(data_dir: Path, temporal_address: str, queue: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(data_dir), "WESTWORLD_TEMPORAL_ADDRESS": temporal_address,
           "WESTWORLD_TASK_QUEUE": queue, "WESTWORLD_TEMPORAL_UI_PORT": "8999"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.mark.parametrize("command", ["propose", "status"])
async def test_a_failing_workflow_task_is_one_clear_error(temporal_address: str, tmp_path: Path,
                                                          command: str) -> None:
    create_keyring(tmp_path / "codec-keys.json")
    client = await Client.connect(temporal_address,
                                  data_converter=build_data_converter(load_keyring(tmp_path / "codec-keys.json")))
    queue, proposal = str(uuid.uuid4()), f"broken-{uuid.uuid4().hex[:8]}"
    (tmp_path / "p.yaml").write_text(f"proposal: {{id: {proposal}, title: t, body: b}}\nvoting_window: 60\n")
    async with Worker(client, task_queue=queue, workflows=[BrokenVoteWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        if command == "status":
            await client.start_workflow("DaoVoteWorkflow", {}, id=f"vote:{proposal}", task_queue=queue)
            code, text = await westworld(tmp_path, temporal_address, queue, "vote", "status", proposal)
        else:
            code, text = await westworld(tmp_path, temporal_address, queue, "vote", "propose",
                                         str(tmp_path / "p.yaml"))
        await client.get_workflow_handle(f"vote:{proposal}").terminate("test done")
    assert "Traceback" not in text, text
    assert code == EXIT_FAILED, text
    assert text.startswith("error: "), text
    assert f"vote:{proposal}" in text and BROKEN in text and "westworld stuck" in text, text
    assert f"http://127.0.0.1:8999/namespaces/default/workflows/vote:{proposal}" in text, text
