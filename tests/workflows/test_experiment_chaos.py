"""ExperimentWorkflow's chaos schedule and cancellation, on a real Temporal server with real mesh-node sandboxes: a
cancellation that reaches a fault in flight goes through (it is not recorded as a failed fault)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import settings_overrides, spec, unique
from tests.workflows.test_experiment import running_nodes, start, status_when
from westworld.experiment_run import ExperimentInput, Phase
from westworld.sandbox import NodeRef
from workflows.experiment import ExperimentWorkflow

__all__ = ["settings_overrides"]



def _node_pids(nodes: list[NodeRef]) -> list[int]:
    """The mesh-node processes serving these nodes' admin ports (found by their command line)."""
    ports = {n.admin_url.rsplit(":", 1)[1] for n in nodes}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if (b"meshnode.node" in args and b"--admin-port" in args
                    and args[args.index(b"--admin-port") + 1].decode() in ports):
                pids.append(int(proc.name))
    return pids


async def test_cancelling_a_run_while_a_fault_is_in_flight_is_no_failed_fault(harness: Harness) -> None:
    """A cancellation reaching a fault being applied is a cancellation, not a chaos failure in the timeline."""
    name = unique("cancel-chaos")
    handle = await start(harness, ExperimentInput(spec=spec(
        name, "1.4.0", duration="60s",
        chaos=[{"kind": "latency", "start": "3s", "duration": "5s", "nodes": [0], "latency_ms": 5}])))
    nodes = await running_nodes(handle)
    await status_when(handle, lambda s: s.phase == Phase.RUNNING)
    pids = _node_pids(nodes)
    assert len(pids) == len(nodes)
    for pid in pids:  # the nodes stop answering: the fault's admin call hangs in flight
        os.kill(pid, signal.SIGSTOP)
    try:
        async def in_flight() -> list[str]:
            d = await handle.describe()
            return [a.activity_type.name for a in d.raw_description.pending_activities]
        await eventually(in_flight, lambda names: "apply_fault" in names, timeout=30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as exc:
            await handle.result()
        assert isinstance(exc.value.cause, CancelledError)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    status = await handle.query(ExperimentWorkflow.status)
    assert [e for e in status.chaos if e.action == "failed"] == []
