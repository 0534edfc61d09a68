"""Wiring of the capabilities part (Anti-Meave: capability tokens, agent actions, anomaly watch, halt) into the
worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds the part's activity classes with their
clients (opened here, closed when the worker stops) and yields the bound activity methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from activities.store import AuditLog, Database
from workers.settings import Settings

WORKFLOWS: tuple[type, ...] = ()


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del settings, database, audit
    yield []
