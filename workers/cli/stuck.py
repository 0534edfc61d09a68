"""`westworld stuck`: running workflows whose current step has lasted longer than a threshold, and why."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client

from westworld.documents import duration_problem
from workers.client import connect
from workers.settings import Settings
from workflows.steps import STEP, STEP_SINCE

SERVER_DROPPED = "Failure exceeds size limit"
"""What the server shows instead of a pending activity's last failure over its size limit."""
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '1d', '1h30m' -> timedelta, at most 10 years; ValueError saying why (with the allowed
    range) otherwise (the CLI reports it as the option's invalid value, exit 2)."""
    parts = re.findall(r"(\d+)([smhdw])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text[:40]!r}: use a number and a unit (s, m, h, d, w), e.g. 30m, 2h, 1d")
    # Exact integer arithmetic: '99999999999d' is refused by the bound, never an OverflowError from timedelta.
    seconds = sum(int(n) * _SECONDS[u] if len(n) <= 20 else 10**20 for n, u in parts)
    if problem := duration_problem(seconds):
        raise ValueError(f"{text[:40]!r} {problem}")
    return timedelta(seconds=seconds)


class PendingActivity(BaseModel):
    activity: str
    attempt: int
    last_failure: str | None


class StuckWorkflow(BaseModel):
    workflow_id: str
    workflow_type: str
    step: str
    since: datetime
    pending: list[PendingActivity]


async def find_stuck(s: Settings, older_than: timedelta, client: Client | None = None) -> list[StuckWorkflow]:
    client = client or await connect(s)
    cutoff = (datetime.now(UTC) - older_than).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    query = f'ExecutionStatus = "Running" AND {STEP_SINCE.name} < "{cutoff}"'
    rows: list[StuckWorkflow] = []
    async for wf in client.list_workflows(query):
        desc = await client.get_workflow_handle(wf.id, run_id=wf.run_id).describe()
        attrs = desc.typed_search_attributes
        pending = [
            PendingActivity(
                activity=p.activity_type.name,
                attempt=p.attempt,
                last_failure=p.last_failure.message if p.HasField("last_failure") else None,
            )
            for p in desc.raw_description.pending_activities
        ]
        rows.append(StuckWorkflow(
            workflow_id=wf.id, workflow_type=wf.workflow_type, step=attrs.get(STEP) or "?",
            since=attrs.get(STEP_SINCE) or wf.start_time, pending=pending,
        ))
    return sorted(rows, key=lambda r: r.since)


def render(rows: list[StuckWorkflow], older_than: str) -> str:
    if not rows:
        return f"no running workflow has been on one step for more than {older_than}"
    now = datetime.now(UTC)
    out = [f"{len(rows)} workflow(s) on one step for more than {older_than}:"]
    for r in rows:
        waited = now - r.since
        out.append(f"- {r.workflow_id} [{r.workflow_type}] step '{r.step}' since {r.since:%Y-%m-%d %H:%M:%S} UTC "
                   f"({str(waited).split('.')[0]})")
        if not r.pending:
            out.append("    waiting on a timer, a signal or human input (no pending activity)")
        for p in r.pending:
            failure = f"; last failure: {p.last_failure}" if p.last_failure else ""
            if p.last_failure and p.last_failure.startswith(SERVER_DROPPED):  # from a worker without a bound
                failure += " (the server dropped a failure over its 4 KiB limit: the worker's log has the cause)"
            out.append(f"    activity {p.activity}: attempt {p.attempt}{failure}")
    return "\n".join(out)
