"""Revision 0005 on real databases (a SQLite file, the real PostgreSQL server): entries written before it get
the tree nodes their appends completed, so proofs, verification and further appends work on the migrated log."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from activities.sql.migrate import alembic_config, migrate_database
from activities.sql.schema import metadata
from tests.activities.test_sql_migrations import previous_audit_append
from westworld import merkle

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_entries_written_before_0005_get_their_tree_nodes(kind: str, request: pytest.FixtureRequest) -> None:
    db = Database(request.getfixturevalue("sqlite_url" if kind == "sqlite" else "postgres_url"))
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        assert await migrate_database(db, "0004") == "0004"
        async with db.engine.begin() as conn:
            heads = [await previous_audit_append(conn, i, "vote.result", f"p{i}", {"i": i}) for i in range(23)]
        assert await migrate_database(db) == HEAD
        async with db.engine.connect() as conn:
            rows = list(await conn.execute(sa.text("SELECT leaf_hash, nodes FROM audit_entries ORDER BY seq")))
        frontier = merkle.Frontier()
        for leaf, nodes in rows:
            assert "".join(h.hex() for h in frontier.append(bytes.fromhex(leaf))) == nodes
        log = AuditLog(db)
        assert (await log.head()).root == heads[-1].root
        for seq in (0, 7, 22):
            proof = await log.inclusion_proof(seq, 23)
            assert proof.root == heads[-1].root and proof.verify()
        consistency = await log.consistency_proof(5, 23)
        assert consistency.old_root == heads[4].root and consistency.verify()
        assert (await log.append("vote.result", "after", {})).seq == 23
        report = await log.verify()
        assert report.ok, report.problems
    finally:
        await db.close()
