"""Wiring of the capabilities part (Anti-Meave: capability tokens, agent actions, anomaly watch, halt) into the
worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds the part's activity classes with their
clients (opened here, closed when the worker stops) and yields the bound activity methods. The root-key
encryption key lives in ``<data dir>/capability-kek.key`` (created on first start, mode 0600).

The genesis operator: `westworld up` creates ``<data dir>/operator.key`` (the person's private key, mode 0600)
and ``operator.pub``; the worker reads only the public key and counts it as a registered operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from activities.capabilities import CapabilityActivities
from activities.capability_admin import CapabilityAdminActivities
from activities.sql.admin_store import AdminStore
from activities.sql.audit_log import AuditLog
from activities.sql.capability_store import CapabilityStore, load_or_create_kek
from activities.sql.database import Database
from workers.settings import Settings
from workflows.agent_action import AgentActionWorkflow
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.capability_admin import CapabilityAdminWorkflow, CapabilityReadWorkflow
from workflows.capability_directory import CapabilityDirectoryWorkflow
from workflows.network_halt import NetworkHaltWorkflow

WORKFLOWS: tuple[type, ...] = (AgentActionWorkflow, AnomalyWatchWorkflow, NetworkHaltWorkflow,
                               CapabilityAdminWorkflow, CapabilityReadWorkflow, CapabilityDirectoryWorkflow)


def kek_file(settings: Settings) -> Path:
    return settings.data_dir / "capability-kek.key"


def operator_key_file(settings: Settings) -> Path:
    """The genesis operator's private key (the person's; the worker never reads it)."""
    return settings.data_dir / "operator.key"


def operator_public_file(settings: Settings) -> Path:
    return settings.data_dir / "operator.pub"


async def open_store(settings: Settings, database: Database) -> CapabilityStore:
    """The capability store over the project database (migrated by the worker at start)."""
    return CapabilityStore(database, load_or_create_kek(kek_file(settings)))


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del audit
    store = await open_store(settings, database)
    admin = CapabilityAdminActivities(store, AdminStore(database), operator_public_file(settings))
    yield [*CapabilityActivities(store).all(), *admin.all()]
