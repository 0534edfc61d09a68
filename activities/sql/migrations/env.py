"""Alembic's entry point for the project's migrations, on the async engine of :class:`Database` (SQLite or
PostgreSQL). :func:`activities.sql.migrate.migrate` hands in its locked connection; the ``alembic`` command
(``-x url=...``) gets one here, under the same lock. ``--sql`` renders the DDL without a database."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from activities.sql.database import Database
from activities.sql.migrate import locked
from activities.sql.schema import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=sqlite+aiosqlite:///path (or postgresql+asyncpg://...)")
    return url


def run_on(connection: Connection) -> None:
    # render_as_batch: SQLite alters a table by copying it; a later revision's op.batch_alter_table needs it
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():  # inside the caller's transaction when there is one
        context.run_migrations()


async def run_async(url: str) -> None:
    db = Database(url)
    try:
        async with locked(db) as conn:
            await conn.run_sync(run_on)
    finally:
        await db.close()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run_on(given)
else:
    asyncio.run(run_async(_url()))
