"""The worker process: every workflow and activity of the project on one task queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit_heads import HeadSigner
from activities.chain import ChainClient
from activities.snapshot import SnapshotClient
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from activities.sql.vote_store import VoteStore
from workers.client import connect
from workers.interceptors import TypedFailureInterceptor
from workers.metrics import Metrics, MetricsInterceptor, make_runtime, start_own_metrics
from workers.settings import Settings, load_settings
from workers.wiring import capabilities as capabilities_wiring
from workers.wiring import charter as charter_wiring
from workers.wiring import charter_rights as charter_rights_wiring
from workers.wiring import experiments as experiments_wiring
from workers.wiring import governance as governance_wiring
from workers.wiring import shelter as shelter_wiring
from workflows.runner_sandbox import workflow_runner

log = logging.getLogger("westworld.worker")

# Each part wires its own workflows and activities in workers/wiring/<part>.py.
PARTS = (experiments_wiring, capabilities_wiring, shelter_wiring, charter_wiring, charter_rights_wiring)
WORKFLOWS: Sequence[type] = (*governance_wiring.WORKFLOWS, *(w for part in PARTS for w in part.WORKFLOWS))


@dataclass
class Resources:
    """Clients the activities are built with; closed when the worker stops."""

    database: Database
    audit: AuditLog
    votes: VoteStore
    chain: ChainClient
    snapshot: SnapshotClient
    part_activities: list[Any]
    governance: governance_wiring.GovernanceClients


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    database = Database(settings.resolved_database_url)
    await database.migrate()  # `westworld up` migrated before starting us; a worker started alone must too
    try:
        async with contextlib.AsyncExitStack() as stack:
            audit = AuditLog(database, HeadSigner.in_dir(settings.data_dir))  # signed heads apart from the log
            await audit.sign_current_head()
            gov = await stack.enter_async_context(governance_wiring.open_clients(settings, database))
            part_activities: list[Any] = []
            for part in PARTS:
                part_activities += await stack.enter_async_context(part.open_activities(settings, database, audit))
            yield Resources(database, audit, gov.votes, gov.chain, gov.snapshot, part_activities, gov)
    finally:
        await database.close()


def activities_of(res: Resources, metrics: Metrics | None = None) -> list[Any]:
    return [*governance_wiring.activities(res.governance, res.audit, metrics), *res.part_activities]


def build_worker(client: Client, res: Resources, task_queue: str, metrics: Metrics | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        interceptors=[*([MetricsInterceptor(metrics)] if metrics else []), TypedFailureInterceptor()],
        workflow_runner=workflow_runner(),
        workflows=list(WORKFLOWS),
        activities=activities_of(res, metrics),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=8),
        max_concurrent_local_activities=64,
    )


async def run_worker(settings: Settings | None = None) -> None:
    """Run until cancelled (SIGINT/SIGTERM)."""
    settings = settings or load_settings()
    runtime = make_runtime(settings)
    metrics = start_own_metrics(settings)
    client = await connect(settings, runtime)
    async with open_resources(settings) as res:
        worker = build_worker(client, res, settings.task_queue, metrics)
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await worker.run()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker())
