"""The audit log's batched appends and stored tree on real databases (a SQLite file, the real PostgreSQL server):
every appender gets its own seq and the root after it, concurrent writers leave one exact tree, proofs come from
the stored nodes and equal the RFC 6962 reference proofs over the leaves, and edited nodes are named."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from activities.audit_heads import HeadSigner
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from tests.fixtures.postgres import fresh_database
from westworld import merkle
from westworld.errors import AuditTampered, InvalidInput


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    database = await fresh_database(request.getfixturevalue("sqlite_url" if request.param == "sqlite"
                                                            else "postgres_url"))
    yield database
    await database.close()


async def stored(db: Database) -> list[tuple[int, bytes, str, str]]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT seq, leaf_hash, nodes, root_after FROM audit_entries ORDER BY seq"))
        return [(r[0], bytes.fromhex(r[1]), r[2], r[3]) for r in rows]


async def assert_exact_tree(db: Database) -> list[bytes]:
    """Seqs 0..n-1, each row's root after it and its nodes as the reference tree has them; the leaf hashes."""
    rows = await stored(db)
    assert [r[0] for r in rows] == list(range(len(rows)))
    frontier = merkle.Frontier()
    for _, leaf, nodes, root_after in rows:
        assert "".join(h.hex() for h in frontier.append(leaf)) == nodes
        assert frontier.root().hex() == root_after
    return [r[1] for r in rows]


async def test_a_batch_gets_consecutive_seqs_and_one_signed_head(db: Database, tmp_path: Path) -> None:
    log = AuditLog(db, HeadSigner.in_dir(tmp_path))
    first = await log.append("k", "one", {"i": -1})
    receipts = await log.append_many([("k", f"s{i}", {"i": i}) for i in range(100)])
    assert [r.seq for r in receipts] == list(range(1, 101)) and first.seq == 0
    leaves = await assert_exact_tree(db)
    for r in receipts:
        assert r.root == merkle.root_of_hashes(leaves[:r.tree_size]).hex() == await log.root(r.tree_size)
        assert r.leaf_hash == leaves[r.seq].hex()
    assert len((tmp_path / "audit-heads.jsonl").read_text().splitlines()) == 2  # one per transaction
    report = await log.verify()
    assert report.ok, report.problems
    assert (report.tree_size, report.root) == (101, receipts[-1].root)


async def test_proofs_from_stored_nodes_equal_the_reference_proofs(db: Database) -> None:
    log = AuditLog(db)
    await log.append_many([("k", str(i), {"i": i}) for i in range(37)])
    leaves = await assert_exact_tree(db)
    for size in (1, 2, 5, 8, 13, 32, 37):
        for seq in range(size):
            proof = await log.inclusion_proof(seq, size)
            assert [bytes.fromhex(h) for h in proof.path] == merkle.inclusion_proof(leaves[:size], seq)
            assert proof.root == merkle.root_of_hashes(leaves[:size]).hex() and proof.verify()
        for old in range(size + 1):
            consistency = await log.consistency_proof(old, size)
            assert [bytes.fromhex(h) for h in consistency.path] == merkle.consistency_proof(leaves[:size], old)
            assert consistency.verify()
    with pytest.raises(InvalidInput, match="fewer than the tree size 38"):
        await log.inclusion_proof(0, 38)
    with pytest.raises(InvalidInput, match="audit entry 37 is not in a tree of 37"):
        await log.inclusion_proof(37)
    assert (await log.inclusion_proof(3)).tree_size == 37  # the size is now known to the reader
    await AuditLog(db).append_many([("k", f"late{i}", {}) for i in range(5)])  # another writer grows the log
    grown = await log.inclusion_proof(40)
    assert grown.tree_size == 42 and grown.verify() and (await log.consistency_proof(37)).verify()
    assert grown.root == merkle.root_of_hashes(await assert_exact_tree(db)).hex()


async def test_concurrent_writers_and_batches_leave_one_exact_tree(db: Database) -> None:
    writers = [AuditLog(db) for _ in range(3)]  # as three worker processes would
    rng = random.Random(7)  # batch sizes for a test
    jobs = []
    for n in range(45):
        w = writers[n % 3]
        size = rng.choice([1, 1, 3, 20])
        jobs.append(w.append_many([("load", f"w{n % 3}-{n}-{i}", {"n": n, "i": i}) for i in range(size)]))
    batches = await asyncio.gather(*jobs)
    receipts = [r for b in batches for r in b]
    assert sorted(r.seq for r in receipts) == list(range(len(receipts)))
    for b in batches:  # one caller's entries are consecutive, in its order
        assert [r.seq for r in b] == list(range(b[0].seq, b[0].seq + len(b)))
    leaves = await assert_exact_tree(db)
    for r in receipts:
        assert r.root == merkle.root_of_hashes(leaves[:r.tree_size]).hex()
    restarted = AuditLog(db)
    last = await restarted.append("z", "after restart", {})
    assert last.seq == len(receipts)
    assert last.root == merkle.root_of_hashes([*leaves, bytes.fromhex(last.leaf_hash)]).hex()
    assert (await restarted.verify()).ok


async def test_a_bad_payload_refuses_the_whole_batch(db: Database) -> None:
    log = AuditLog(db)
    with pytest.raises(InvalidInput, match="not plain JSON"):
        await log.append_many([("k", "ok", {}), ("k", "bad", {"x": float("nan")})])
    assert await stored(db) == []
    receipt = await log.append("k", "numbers", {"n": {2: "two", 10: "ten"}})  # keys sort as text when stored
    assert receipt.seq == 0 and (await log.verify()).ok


async def test_edited_tree_nodes_are_named_and_refuse_proofs(db: Database) -> None:
    log = AuditLog(db)
    await log.append_many([("k", str(i), {"i": i}) for i in range(8)])
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_entries SET nodes = :n WHERE seq = 3"), {"n": "ab" * 64})
    report = await log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "bad_row")]
    assert "tree nodes stored with it" in report.problems[0].message
    with pytest.raises(AuditTampered, match="stored tree nodes fold to"):
        await log.inclusion_proof(0, 4)
    assert (await AuditLog(db).append("k", "after", {})).seq == 8  # a restart rebuilds from the leaf hashes
    assert len(await assert_exact_tree_prefix(db, 3)) == 9


async def assert_exact_tree_prefix(db: Database, skip_seq: int) -> list[bytes]:
    """As assert_exact_tree, but not checking the nodes of the row whose nodes the test edited."""
    rows = await stored(db)
    frontier = merkle.Frontier()
    for seq, leaf, nodes, root_after in rows:
        completed = "".join(h.hex() for h in frontier.append(leaf))
        assert seq == skip_seq or completed == nodes
        assert frontier.root().hex() == root_after
    return [r[1] for r in rows]
