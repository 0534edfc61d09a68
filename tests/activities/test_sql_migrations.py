"""The schema migrations on real databases: a SQLite file and a database of its own on the real PostgreSQL server.

From empty, and from the schema the code before the migrations made (``fixtures/previous_schema.<dialect>.sql``,
captured from that code's ``create_all``), with its rows kept; concurrent migrations; a foreign table refused;
and the migrated schema equal to :data:`activities.sql.schema.metadata` (Alembic's autogenerate finds no diff).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from activities.sql.migrate import alembic_config, migrate
from activities.sql.schema import metadata
from activities.sql.vote_store import VoteStore
from westworld import merkle
from westworld.audit import TreeHead, canonical_json, entry_leaf
from westworld.errors import CONFIG_ERROR, WestworldError

FIXTURES = Path(__file__).parent / "fixtures"
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
OURS = {t.name for t in metadata.sorted_tables}
TABLE_OF = re.compile(r"(?:CREATE TABLE|CREATE INDEX \w+ ON) (\w+)")


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database: a new SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'westworld.db'}"
        return
    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = Database(server.set(database="postgres").render_as_string(hide_password=False))
    async with admin.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.close()


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


async def run_sync(url: str, fn: Any) -> Any:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await db.close()


def _tables(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _diff(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def execute_script(url: str, script: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            for statement in (s.strip() for s in script.split(";\n")):
                if statement and not all(line.startswith("--") for line in statement.splitlines()):
                    await conn.execute(sa.text(statement))
    finally:
        await db.close()


async def create_previous_schema(url: str, only: set[str] | None = None) -> None:
    """The tables as the previous code made them (all, or those in ``only``), from the captured DDL."""
    script = (FIXTURES / f"previous_schema.{dialect_of(url)}.sql").read_text()
    if only is not None:
        script = "".join(f"{s};\n" for s in script.split(";\n")
                         if (m := TABLE_OF.search(s)) is not None and m.group(1) in only)
    await execute_script(url, script)


def previous_tables(url: str) -> set[str]:
    script = (FIXTURES / f"previous_schema.{dialect_of(url)}.sql").read_text()
    return {m.group(1) for m in TABLE_OF.finditer(script)}


async def assert_at_head_and_equal_to_metadata(url: str) -> None:
    assert await run_sync(url, _revision) == HEAD
    assert await run_sync(url, _tables) == OURS | {"alembic_version"}
    assert await run_sync(url, _diff) == []


async def test_an_empty_database_migrates_to_the_schema(url: str) -> None:
    assert await migrate(url) == HEAD
    await assert_at_head_and_equal_to_metadata(url)
    assert await migrate(url) == HEAD  # a second run changes nothing
    await assert_at_head_and_equal_to_metadata(url)


async def previous_audit_append(conn: Any, seq: int, kind: str, subject: str, payload: dict[str, Any]) -> TreeHead:
    """An audit entry as the code before revision 0005 wrote it (no tree nodes); the head after it (entry ``seq``
    is appended to a log whose earlier leaves this helper wrote too)."""
    at = datetime(2026, 12, 1, 12, seq, tzinfo=UTC)
    leaf = merkle.leaf_hash(entry_leaf(kind, subject, canonical_json(payload), at))
    earlier = [bytes.fromhex(h) for h in (await conn.execute(sa.text(
        "SELECT leaf_hash FROM audit_entries ORDER BY seq"))).scalars()]
    root = merkle.root_of_hashes([*earlier, leaf]).hex()
    await conn.execute(sa.text("INSERT INTO audit_entries (seq, kind, subject, payload, leaf_hash, root_after, "
                               "created_at) VALUES (:s, :k, :j, :p, :l, :r, :at)"),
                       {"s": seq, "k": kind, "j": subject, "p": canonical_json(payload), "l": leaf.hex(), "r": root,
                        "at": at})
    return TreeHead(tree_size=seq + 1, root=root)


async def test_the_previous_schema_is_recognised_stamped_and_its_rows_kept(url: str) -> None:
    await create_previous_schema(url)
    assert await run_sync(url, _tables) == previous_tables(url)  # every table of that code, no alembic_version
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    db = Database(url)
    try:
        async with db.engine.begin() as conn:  # rows written the way the previous code wrote them
            await conn.execute(sa.text("INSERT INTO cap_nodes (node_id, region, public_key, added_at) "
                                       "VALUES ('n1', 'eu', NULL, :at)"), {"at": now})
            await conn.execute(sa.text("INSERT INTO cap_halts (epoch, request_key, reason) VALUES (1, 'k', 'r')"))
            receipt = await previous_audit_append(conn, 0, "vote.result", "p1", {"decision": "approved"})
    finally:
        await db.close()

    assert await migrate(url) == HEAD
    await assert_at_head_and_equal_to_metadata(url)
    db = Database(url)
    try:
        log = AuditLog(db)
        assert (await log.head()).root == receipt.root
        assert (await log.append("vote.result", "p2", {"decision": "rejected"})).seq == 1
        assert (await log.verify()).ok
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT region FROM cap_nodes"))).scalars().all() == ["eu"]
            assert (await conn.execute(sa.text("SELECT resumed_by FROM cap_halts"))).scalar() == "[]"
    finally:
        await db.close()


async def test_a_partial_previous_schema_gets_the_tables_it_lacks(url: str) -> None:
    """The previous code made the shelter's and the admin's tables only on first use: a database from a worker
    that never stored a document has the others only."""
    await create_previous_schema(url, only={"audit_entries", "votes", "vote_ballots", "vote_proposals"})
    assert await run_sync(url, _tables) == {"audit_entries", "votes", "vote_ballots", "vote_proposals"}
    assert await migrate(url) == HEAD
    await assert_at_head_and_equal_to_metadata(url)


async def test_a_table_that_is_not_ours_is_refused_and_nothing_is_stamped(url: str) -> None:
    await execute_script(url, "CREATE TABLE votes (id INTEGER PRIMARY KEY, what TEXT);\n")
    with pytest.raises(WestworldError) as err:
        await migrate(url)
    assert err.value.type == CONFIG_ERROR
    assert "table votes" in err.value.message and "'what'" in err.value.message and "'voter'" in err.value.message
    assert await run_sync(url, _tables) == {"votes"}  # one transaction: nothing created, nothing stamped


async def test_concurrent_migrations_in_one_process_do_not_fail(url: str) -> None:
    results = await asyncio.gather(*(migrate(url) for _ in range(4)))
    assert results == [HEAD] * 4
    await assert_at_head_and_equal_to_metadata(url)


async def test_two_processes_migrating_at_once_do_not_fail(url: str) -> None:
    """`westworld up` and a worker started alone, at the same moment: two processes, two connections."""
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "activities.sql.migrate", url,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=120)
    for p, (out, errors) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, errors.decode()
        assert out.decode().strip().endswith(f"at revision {HEAD}")
    await assert_at_head_and_equal_to_metadata(url)


async def test_a_database_object_migrates_itself_before_the_stores_use_it(url: str) -> None:
    db = Database(url)
    try:
        assert await db.migrate() == HEAD
        assert await VoteStore(db).tally("nothing") is None
    finally:
        await db.close()


def test_the_alembic_command_sees_the_migrations(tmp_path: Path) -> None:
    """Operators use Alembic's own command with the shipped ini: upgrade, then current."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    ini = Path(__file__).parents[2] / "activities" / "sql" / "alembic.ini"
    alembic = Path(sys.executable).parent / "alembic"
    for args in (["upgrade", "head"], ["current"]):
        done = subprocess.run([str(alembic), "-c", str(ini), "-x", f"url={url}", *args], capture_output=True,
                              text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr
    assert f"{HEAD} (head)" in done.stdout
