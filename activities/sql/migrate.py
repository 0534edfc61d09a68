"""Schema migrations (Alembic): bring a database to the newest revision, from empty or from any earlier one.

:func:`migrate` runs ``alembic upgrade head`` in ONE transaction that holds a lock for its whole length: a
PostgreSQL transaction-level advisory lock, or SQLite's write lock (``BEGIN IMMEDIATE``). So any number of
processes may migrate the same database at once (``westworld up`` before it starts the worker, and every worker
at start as a safety net): the first does the work, the others wait, then find the schema current and do
nothing. DDL is transactional on both backends, so a failed migration leaves the schema as it was.

A database made by the code before the migrations existed (tables, no ``alembic_version``) is recognised by
revision 0001, which creates only the tables it lacks after checking the ones it has; it is then stamped.

From a shell: ``python -m activities.sql.migrate URL``, or Alembic itself:
``alembic -c activities/sql/alembic.ini -x url=URL upgrade head`` (``current``, ``history``, ``upgrade head --sql``
work too).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATE_LOCK_KEY = 0x5745_5354_4D49_4752  # "WESTMIGR": the PostgreSQL advisory lock serialising migrations
log = logging.getLogger("westworld.sql")
logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-run "Context impl" lines; ours says what changed


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the project's migrations (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@asynccontextmanager
async def locked(db: Database) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    async with db.engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite: the write lock, held to the commit
        if db.dialect == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        yield conn


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade(conn: Connection, revision: str) -> str:
    before = current_revision(conn)
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    after = current_revision(conn)
    if after != before:
        log.info("database migrated from %s to %s", before or "nothing", after)
    return after or ""


async def migrate_database(db: Database, revision: str = "head") -> str:
    """Upgrade ``db`` to ``revision`` under the migration lock; returns the revision it is at."""
    async with locked(db) as conn:
        return await conn.run_sync(_upgrade, revision)


async def migrate(url: str, revision: str = "head") -> str:
    """Upgrade the database at ``url`` to ``revision`` (idempotent, safe against concurrent callers)."""
    db = Database(url)
    try:
        return await migrate_database(db, revision)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m activities.sql.migrate URL  (e.g. sqlite+aiosqlite:///.data/westworld.db)")
    url = args[0]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"{Database(url).safe_url}: at revision {asyncio.run(migrate(url))}")


if __name__ == "__main__":
    main()
