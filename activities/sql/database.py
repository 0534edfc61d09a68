"""The project database (SQLAlchemy 2 async Core), one class for both backends.

SQLite through aiosqlite is the embedded default (WAL journal); PostgreSQL through asyncpg serves at scale. On
SQLite every transaction starts with ``BEGIN IMMEDIATE``, so a read followed by a write in one transaction can
never fail to upgrade its lock when another connection wrote in between. The tables are made by the migrations
(:func:`activities.sql.migrate.migrate`), never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _sqlite_begin_immediate(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not emit its own deferred BEGIN
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine for ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://user:pw@host/db``."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.safe_url = self.url.render_as_string(hide_password=True)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite" and (path := self.url.database) and not path.startswith(("file:", ":memory:")):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 10} if self.dialect == "postgresql" else {}
        self.engine = create_async_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        if self.dialect == "sqlite":
            _sqlite_begin_immediate(self.engine)

    async def migrate(self) -> str:
        """Bring the schema to the newest migration (idempotent, safe against concurrent callers); the revision."""
        from activities.sql.migrate import migrate_database

        return await migrate_database(self)

    async def ping(self) -> None:
        """One round trip to the database (a health check); raises what the driver raises when it does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
