"""Wiring of the charter part (Anti-Delos: the charter on chain and its enforcement points) into the worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds the Charter contract reader and the
enforcement client (the gate's address and token, the Prometheus config it rewrites) and yields the bound methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from eth_account import Account

from activities.chain import ChainClient, connect_web3, load_deployment
from activities.charter_chain import CharterChain, CharterChainActivities
from activities.charter_enforce import CharterEnforcement, CharterEnforcementActivities
from activities.http import open_http
from activities.sql.audit_log import AuditLog
from activities.sql.charter_store import CharterStore
from activities.sql.database import Database
from workers.settings import Settings, charter_gate_token_file
from workflows.charter_sync import CharterSyncWorkflow

WORKFLOWS: tuple[type, ...] = (CharterSyncWorkflow,)


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del audit
    w3 = connect_web3(settings.chain_rpc_url)
    chain = ChainClient(w3, load_deployment(settings.contracts_file), Account.from_key(settings.chain_deployer_key),
                        settings.chain_dev_time_travel)
    try:
        async with open_http(15.0) as http:
            reader = CharterChainActivities(CharterChain(chain))
            enforce = CharterEnforcementActivities(CharterEnforcement(
                http, settings.charter_file, settings.charter_gate_url, charter_gate_token_file(settings),
                settings.resolved_prometheus_config, settings.resolved_prometheus_url,
                CharterStore(database).consents_in_force))
            yield [reader.charter_on_chain, reader.charter_anchor_checkpoint, enforce.charter_enforce]
    finally:
        await w3.provider.disconnect()
