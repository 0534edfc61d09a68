"""Temporal Schedules declared in code and synced idempotently by `westworld up` (create, or update in place)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from westworld.keys import (
    AUDIT_ANCHOR_SCHEDULE,
    GUARDIAN_ROTATION_SCHEDULE,
    REPLICA_AUDIT_SCHEDULE,
    RETENTION_PURGE_SCHEDULE,
)
from workflows.audit_anchor import AuditAnchorWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow
from workflows.replica_audit import ReplicaAuditWorkflow
from workflows.retention_purge import RetentionPurgeWorkflow


@dataclass(frozen=True)
class Declared:
    schedule_id: str
    workflow: str
    every: timedelta
    note: str


DECLARED = (
    Declared(AUDIT_ANCHOR_SCHEDULE, AuditAnchorWorkflow.__name__, timedelta(hours=1),
             "verify the audit log and anchor its root on chain"),
    Declared(GUARDIAN_ROTATION_SCHEDULE, GuardianRotationWorkflow.__name__, timedelta(days=182),
             "re-split the shelter key for the next guardian set (`shelter rotate --next`)"),
    Declared(REPLICA_AUDIT_SCHEDULE, ReplicaAuditWorkflow.__name__, timedelta(days=1),
             "read back every shelter replica, repair lost or corrupted ones from a good copy"),
    Declared(RETENTION_PURGE_SCHEDULE, RetentionPurgeWorkflow.__name__, timedelta(days=1),
             "delete metric series, consent messages and export bundles past the charter's retention"),
)


def _schedule(d: Declared, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(d.workflow, id=d.schedule_id, task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=d.every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def sync_schedules(client: Client, task_queue: str, echo: Callable[[str], None]) -> None:
    for d in DECLARED:
        desired = _schedule(d, task_queue)
        try:
            await client.create_schedule(d.schedule_id, desired)
            echo(f"schedule {d.schedule_id:14} created: every {d.every} {d.note}")
        except ScheduleAlreadyRunningError:
            async def replace(_: ScheduleUpdateInput, new: Schedule = desired) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(d.schedule_id).update(replace)
            echo(f"schedule {d.schedule_id:14} in sync: every {d.every}")
