"""Wiring of the charter's users' rights (consent, retention, export, violation cases) into the worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds :class:`activities.charter_rights.CharterRights`
with the consent store, Prometheus, the charter gate (its token and the pseudonym key it created in the data dir),
IPFS for export delivery, and yields its bound activity methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from activities.charter_rights import CharterRights
from activities.http import open_http
from activities.sql.audit_log import AuditLog
from activities.sql.charter_store import CharterStore
from activities.sql.database import Database
from activities.storage.ipfs import IpfsClient
from workers.settings import Settings, charter_gate_key_file, charter_gate_token_file
from workflows.charter_consent import CharterConsentWorkflow
from workflows.data_export import DataExportWorkflow
from workflows.retention_purge import RetentionPurgeWorkflow
from workflows.violation_intake import ViolationIntakeWorkflow
from workflows.violation_report import ViolationReportWorkflow

WORKFLOWS: tuple[type, ...] = (CharterConsentWorkflow, RetentionPurgeWorkflow, DataExportWorkflow,
                               ViolationIntakeWorkflow, ViolationReportWorkflow)


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del audit
    async with open_http(30.0) as http:
        ipfs = IpfsClient(settings.ipfs_api_url, http, timeout=30.0)
        rights = CharterRights(
            http, CharterStore(database), charter_file=settings.charter_file, contracts_file=settings.contracts_file,
            prometheus_url=settings.resolved_prometheus_url, gate_url=settings.charter_gate_url,
            gate_token_file=charter_gate_token_file(settings), pseudonym_key_file=charter_gate_key_file(settings),
            data_dir=settings.data_dir,
            ipfs=ipfs, notify_webhook_url=settings.notify_webhook_url,
            scrape_settle=2 * settings.prometheus_scrape_interval + 0.5)
        yield rights.activities()
