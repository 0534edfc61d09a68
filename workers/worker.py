"""The worker process: every workflow and activity of the project on one task queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from temporalio.client import Client
from temporalio.worker import Worker
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.anchor import AnchorActivities
from activities.audit import AuditActivities
from activities.audit_heads import HeadSigner
from activities.chain import ChainActivities, ChainClient, load_deployment
from activities.policy import PolicyActivities
from activities.snapshot import SnapshotActivities, SnapshotClient
from activities.store import AuditLog, Database
from activities.vote_store import VoteStore
from activities.votes import VoteActivities
from workers import capabilities_wiring, experiments_wiring, shelter_wiring
from workers.client import connect
from workers.metrics import Metrics, MetricsInterceptor, make_runtime, start_own_metrics
from workers.settings import Settings, load_settings
from workflows.audit_anchor import AuditAnchorWorkflow
from workflows.audit_verify import AuditVerifyWorkflow
from workflows.dao_vote import DaoVoteWorkflow
from workflows.sandbox import workflow_runner

log = logging.getLogger("westworld.worker")

# Each part (experiments, capabilities, shelter) wires its own workflows and activities in workers/<part>_wiring.py.
PARTS = (experiments_wiring, capabilities_wiring, shelter_wiring)
WORKFLOWS: Sequence[type] = (DaoVoteWorkflow, AuditAnchorWorkflow, AuditVerifyWorkflow,
                             *(w for part in PARTS for w in part.WORKFLOWS))


@dataclass
class Resources:
    """Clients the activities are built with; closed when the worker stops."""

    database: Database
    audit: AuditLog
    votes: VoteStore
    chain: ChainClient
    snapshot: SnapshotClient
    part_activities: list[Any]
    policy_file: Path


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    database = Database(settings.resolved_database_url)
    await database.init()
    w3 = AsyncWeb3(AsyncHTTPProvider(settings.chain_rpc_url))
    deployment = load_deployment(settings.contracts_file)
    chain = ChainClient(w3, deployment, Account.from_key(settings.chain_deployer_key), settings.chain_dev_time_travel)
    http = httpx.AsyncClient(timeout=15.0)
    snapshot = SnapshotClient(http, settings.snapshot_hub_url, settings.snapshot_sequencer_url,
                              settings.snapshot_space, settings.chain_deployer_key)
    try:
        async with contextlib.AsyncExitStack() as stack:
            audit = AuditLog(database, HeadSigner.in_dir(settings.data_dir))  # signed heads apart from the log
            await audit.sign_current_head()
            part_activities: list[Any] = []
            for part in PARTS:
                part_activities += await stack.enter_async_context(part.open_activities(settings, database, audit))
            votes = VoteStore(database)
            await votes.init()
            yield Resources(database, audit, votes, chain, snapshot, part_activities, settings.policy_file)
    finally:
        await http.aclose()
        await database.close()
        await w3.provider.disconnect()


def activities_of(res: Resources, metrics: Metrics | None = None) -> list[Any]:
    chain_acts = ChainActivities(res.chain)
    votes = VoteActivities(res.votes, res.chain, _vote_observer(metrics) if metrics else None, res.snapshot)
    snapshot = SnapshotActivities(res.snapshot)
    anchor = AnchorActivities(res.chain)
    audit = AuditActivities(res.audit, _audit_observer(metrics) if metrics else None, anchor.latest_anchor)
    policy = PolicyActivities(res.chain, res.policy_file)
    return [
        chain_acts.chain_snapshot, chain_acts.governor_propose, chain_acts.governor_finalize,
        chain_acts.governor_queue, chain_acts.governor_execute, chain_acts.governor_state,
        votes.record_votes, votes.vote_set_root, votes.chain_time,
        votes.vote_claim_proposal, votes.vote_save_opening, votes.vote_load_opening,
        audit.append_audit, audit.verify_audit_log, audit.audit_report, anchor.anchor_root,
        snapshot.create_proposal, snapshot.submit_vote, snapshot.scores, policy.load_policy,
        *res.part_activities,
    ]


def _vote_observer(metrics: Metrics) -> Callable[[str | None], None]:
    def observe(reason: str | None) -> None:
        if reason is None:
            metrics.vote_accepted()
        else:
            metrics.vote_rejected(reason)

    return observe


def _audit_observer(metrics: Metrics) -> Callable[[bool], None]:
    return lambda ok: metrics.audit_appended() if ok else metrics.audit_append_failed()


def build_worker(client: Client, res: Resources, task_queue: str, metrics: Metrics | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        interceptors=[MetricsInterceptor(metrics)] if metrics else [],
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
