"""Wiring of the shelter part (Sublime shelter: encrypted replicated documents and guardian key shares) into the worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds the part's activity classes with their
clients (opened here, closed when the worker stops) and yields the bound activity methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from activities.http import open_http
from activities.notify import NotifyActivities
from activities.shelter_rotation import RotationActivities
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from workers.settings import Settings
from workers.wiring.shelter_storage import open_storage_activities
from workflows.document_access import DocumentAccessWorkflow
from workflows.emergency_access import EmergencyAccessWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow
from workflows.key_ceremony import KeyCeremonyWorkflow
from workflows.replica_audit import ReplicaAuditWorkflow
from workflows.shelter_read import CurrentKeyEpochWorkflow
from workflows.store_document import StoreDocumentWorkflow

WORKFLOWS: tuple[type, ...] = (DocumentAccessWorkflow, EmergencyAccessWorkflow, GuardianRotationWorkflow,
                               StoreDocumentWorkflow, ReplicaAuditWorkflow, KeyCeremonyWorkflow,
                               CurrentKeyEpochWorkflow)


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del audit
    async with open_http(15.0) as http, open_storage_activities(settings, database) as storage:
        notify = NotifyActivities(http, settings.notify_webhook_url,
                                  settings.data_dir / "shelter" / "notifications.jsonl")
        rotation = RotationActivities(database, settings.data_dir / "shelter")
        yield [
            notify.notify_guardians,
            rotation.begin_rotation, rotation.reshare_master_key, rotation.activate_key_epoch,
            rotation.abandon_rotation,
            *storage,
        ]
