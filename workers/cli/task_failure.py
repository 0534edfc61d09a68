"""A workflow that cannot answer a query because its workflow task keeps failing (the worker's code raised: a bug,
a non-deterministic change, a workflow type the worker does not know). The server then answers every query with
"Workflow Task in failed state" or lets it time out; the CLI says so in one `error: ...` line naming the workflow,
the cause from its history and where to look (`westworld stuck`, the UI), never with a traceback."""

from __future__ import annotations

from datetime import timedelta

import typer
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionDescription, WorkflowHandle
from temporalio.service import RPCError

from workers.cli.common import EXIT_FAILED, fail
from workers.settings import Settings

QUERY_TIMEOUT = timedelta(seconds=10)
"""How long a CLI query waits: a workflow whose task fails never answers, and the SDK's default is a minute."""


async def failing_task_cause(handle: WorkflowHandle[object, object]) -> str | None:
    """The failure of the workflow task that is failing now (the last one recorded, with no task completed after
    it), or None if its tasks are not failing. Workflow task failures carry no payloads, so the message is clear."""
    cause: str | None = None
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            kind = failure.application_failure_info.type if failure.HasField("application_failure_info") else ""
            cause = f"{kind}: {failure.message}" if kind else failure.message
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            cause = None
    return cause


def _where(s: Settings, workflow_id: str) -> str:
    from workers.cli.experiment import ui_url

    return f"`westworld stuck` lists it; the stack trace is at {ui_url(s, workflow_id)}"


def _failing(s: Settings, workflow_id: str, cause: str) -> typer.Exit:
    return fail(f"{workflow_id}: its workflow task is failing (Workflow Task in failed state), so it cannot "
                f"answer: {cause}. The worker's code raised this; {_where(s, workflow_id)}", EXIT_FAILED)


async def failing_now(s: Settings, handle: WorkflowHandle[object, object],
                      desc: WorkflowExecutionDescription) -> typer.Exit | None:
    """The error exit for a running workflow whose task is being retried after a failure (checked before a query,
    which would only time out), else None."""
    if desc.raw_description.pending_workflow_task.attempt > 1 and (cause := await failing_task_cause(handle)):
        return _failing(s, handle.id, cause)
    return None


async def unanswered(s: Settings, handle: WorkflowHandle[object, object], err: RPCError) -> typer.Exit:
    """The error exit (``EXIT_FAILED``) for a query ``handle`` did not answer with ``err``: the failing task's
    cause when there is one, else the server's answer and that the worker may be down."""
    if (cause := await failing_task_cause(handle)) is not None:
        return _failing(s, handle.id, cause)
    return fail(f"{handle.id} did not answer ({err.message}): is a worker polling its task queue "
                f"(`westworld up`)? {_where(s, handle.id)}", EXIT_FAILED)
