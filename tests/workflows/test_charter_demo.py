"""The charter demo part against the harness's chain and worker, a real gate (with its kernel filter where it loads)
and the session's Prometheus scraping it: it finishes, having found no series outside the charter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.charter_support import charter_settings, gate_job
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.conftest import Harness
from westworld.charter_sync import CharterSyncInput
from westworld.keys import CHARTER_SYNC_ID
from workers import charter_gate
from workers.demo.charter import run_charter_demo
from workflows.charter_sync import CharterSyncWorkflow


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer) -> dict[str, Any]:
    return charter_settings(prometheus, charter_kernel_device="lo", prometheus_scrape_interval=0.5)


@pytest.fixture
async def gate(harness: Harness) -> AsyncIterator[charter_gate.RunningGate]:
    running = await charter_gate.start(harness.settings, kernel=True)
    try:
        yield running
    finally:
        await running.close()


async def test_the_charter_demo_runs_on_the_stack(harness: Harness, gate: charter_gate.RunningGate,
                                                  prometheus: PrometheusServer) -> None:
    lines: list[str] = []
    with gate_job(prometheus, [f"127.0.0.1:{harness.settings.charter_gate_port}"]):
        handle = await harness.client.start_workflow(CharterSyncWorkflow.run, CharterSyncInput(poll_interval=1.0),
                                                     id=CHARTER_SYNC_ID, task_queue=harness.task_queue)
        try:
            await run_charter_demo(harness.settings, lines.append)
        finally:
            await handle.cancel()
    text = "\n".join(lines)
    print(text)
    assert "none outside the charter" in text
    assert "gate drops:" in text and "no_consent" in text
    if gate.state.kernel is not None:
        assert "kernel filter: loaded at tc egress of lo" in text
