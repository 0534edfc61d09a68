"""Signed administrative requests in the workflow tests: the genesis operator's key (as `westworld up` makes it)
and the client calls the CLI makes (workers/cli/agent_ops.py), against the harness's worker."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.client import WorkflowHandle

from tests.workflows.conftest import Harness
from westworld.agents import AdminAction, AdminChange, AdminResult, AgentActionInput, AgentActionResult
from workers.cli import agent_ops as ops
from workers.settings import Settings
from workers.stack import standing
from workers.wiring.capabilities import operator_key_file
from workflows.agent_action import AgentActionWorkflow

ActionHandle = WorkflowHandle[AgentActionWorkflow, AgentActionResult]


def client_settings(h: Harness) -> Settings:
    """The harness's settings as a client sees them (its task queue)."""
    return h.settings.model_copy(update={"task_queue": h.task_queue})


def operator_key(h: Harness) -> bytes:
    """The genesis operator's private key (created in the worker's data dir, as `westworld up` does)."""
    standing.ensure_operator_key(h.settings)
    return ops.read_private_key(operator_key_file(h.settings))


async def admin(h: Harness, change: AdminChange, keys: Sequence[bytes]) -> AdminResult:
    return await ops.admin(h.client, client_settings(h), change, keys)


async def halt(h: Harness, reason: str, guardians_required: int = 0) -> int:
    """A halt the operator signs for (the only way besides the watch); returns its epoch."""
    result = await admin(h, AdminChange(action=AdminAction.HALT, reason=reason,
                                        guardians_required=guardians_required), [operator_key(h)])
    return result.halt_epoch


async def start_sealed(h: Harness, inp: AgentActionInput) -> ActionHandle:
    """Start the agent action with its (clear) token sealed to the workers for it, as the CLI does."""
    from workers.cli.agent_common import start_sealed_action  # the agent CLI's sealing (westworld/sealed.py)

    wid = await start_sealed_action(h.client, client_settings(h), inp, inp.token)
    return h.client.get_workflow_handle_for(AgentActionWorkflow.run, wid)
