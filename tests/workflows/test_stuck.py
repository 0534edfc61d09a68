"""`westworld stuck` names the real cause of a retrying activity, on a real Temporal server with the project's data
converter: a Python failure carries its stack trace and its causes, and a pending activity's last failure larger
than the server's limit (4 KiB by default) used to be replaced by "Failure exceeds size limit"."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.fixtures.polling import eventually
from workers.cli.stuck import find_stuck, render
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.settings import Settings
from workers.stack.processes import free_port
from workflows.steps import set_step

DEAD_URL = f"http://127.0.0.1:{free_port()}/api/v0/version"


@activity.defn(name="probe_unreachable_service")
async def probe_unreachable_service() -> None:
    """Fails as a client library fails: the real cause on top, a long server answer (here 6 KB, as a Kubernetes
    ApiException carries the response headers and body) in the exception it was raised from."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            await http.post(DEAD_URL)
    except httpx.TransportError as err:
        answer = RuntimeError("HTTP response body: " + "<html>upstream unavailable</html>" * 180)
        answer.__cause__ = err
        raise ConnectionError(f"IPFS at {DEAD_URL} is unreachable: {err!r}") from answer


@workflow.defn(name="StuckProbeWorkflow")
class StuckProbeWorkflow:
    @workflow.run
    async def run(self) -> None:
        set_step("probing an unreachable service")
        await workflow.execute_activity("probe_unreachable_service", start_to_close_timeout=timedelta(seconds=30),
                                        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                                                 maximum_interval=timedelta(seconds=1)))


async def test_stuck_shows_the_real_cause_of_a_retrying_activity(temporal_address: str, tmp_path: Path) -> None:
    key_file = tmp_path / "codec.json"
    create_keyring(key_file)
    client = await Client.connect(temporal_address, data_converter=build_data_converter(load_keyring(key_file)))
    queue = str(uuid.uuid4())
    async with Worker(client, task_queue=queue, workflows=[StuckProbeWorkflow],
                      activities=[probe_unreachable_service], workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow(StuckProbeWorkflow.run, id=f"stuck-probe-{queue}", task_queue=queue)
        try:
            rows = await eventually(
                lambda: find_stuck(Settings(data_dir=tmp_path, temporal_address=temporal_address), timedelta(0),
                                   client=client),
                lambda rs: any(r.workflow_id == handle.id and r.pending and r.pending[0].attempt > 1 for r in rs),
                timeout=30)
        finally:
            await handle.terminate()
    row = next(r for r in rows if r.workflow_id == handle.id)
    failure = row.pending[0].last_failure or ""
    assert "exceeds size limit" not in failure
    assert f"IPFS at {DEAD_URL} is unreachable" in failure
    assert f"IPFS at {DEAD_URL} is unreachable" in render(rows, "0s")
