"""Wiring of the governance part (proposals, signed token-weighted votes, the Governor and timelock, Snapshot, the
audit log and its anchor, the DAO's policy file) into the worker.

``WORKFLOWS`` are registered on the worker; ``open_clients`` opens the part's clients (closed when the worker stops)
and ``activities`` binds the part's activity methods, observed by the worker's metrics when it has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from activities.anchor import AnchorActivities
from activities.audit import AuditActivities
from activities.chain import ChainActivities, ChainClient, connect_web3, load_deployment
from activities.http import open_http
from activities.policy import PolicyActivities
from activities.snapshot import SnapshotActivities, SnapshotClient
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from activities.sql.vote_store import VoteStore
from activities.votes import VoteActivities
from workers.metrics import Metrics
from workers.settings import Settings
from workflows.audit_anchor import AuditAnchorWorkflow
from workflows.audit_verify import AuditVerifyWorkflow
from workflows.dao_vote import DaoVoteWorkflow

WORKFLOWS: tuple[type, ...] = (DaoVoteWorkflow, AuditAnchorWorkflow, AuditVerifyWorkflow)


@dataclass
class GovernanceClients:
    """The clients the governance activities are built with."""

    chain: ChainClient
    votes: VoteStore
    snapshot: SnapshotClient
    policy_file: Path


@contextlib.asynccontextmanager
async def open_clients(settings: Settings, database: Database) -> AsyncIterator[GovernanceClients]:
    w3 = connect_web3(settings.chain_rpc_url)
    chain = ChainClient(w3, load_deployment(settings.contracts_file), Account.from_key(settings.chain_deployer_key),
                        settings.chain_dev_time_travel)
    try:
        async with open_http(15.0) as http:
            snapshot = SnapshotClient(http, settings.snapshot_hub_url, settings.snapshot_sequencer_url,
                                      settings.snapshot_space, settings.chain_deployer_key)
            votes = VoteStore(database)
            yield GovernanceClients(chain, votes, snapshot, settings.policy_file)
    finally:
        await w3.provider.disconnect()


def activities(c: GovernanceClients, audit_log: AuditLog, metrics: Metrics | None = None) -> list[Any]:
    chain = ChainActivities(c.chain)
    votes = VoteActivities(c.votes, c.chain, _vote_observer(metrics) if metrics else None, c.snapshot)
    snapshot = SnapshotActivities(c.snapshot)
    anchor = AnchorActivities(c.chain)
    audit = AuditActivities(audit_log, _audit_observer(metrics) if metrics else None, anchor.latest_anchor)
    policy = PolicyActivities(c.chain, c.policy_file)
    return [
        chain.chain_snapshot, chain.governor_propose, chain.governor_finalize,
        chain.governor_queue, chain.governor_execute, chain.governor_state,
        votes.record_votes, votes.vote_set_root, votes.chain_time,
        votes.vote_claim_proposal, votes.vote_save_opening, votes.vote_load_opening,
        votes.vote_read_count, votes.vote_close,
        audit.append_audit, audit.verify_audit_log, audit.audit_report, anchor.anchor_root,
        snapshot.create_proposal, snapshot.submit_vote, snapshot.scores, policy.load_policy,
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
