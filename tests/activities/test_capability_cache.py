"""The capability check's caches never outlive what they cache: a revocation, a key retired, a halt, a node
deregistered or a reservation released — by another process, another store, or plain SQL an operator typed — takes
effect at the very next check, on SQLite (the cached, group-committing path) and PostgreSQL.

Each test first warms the checking store's caches with an allowed check, then changes the state elsewhere."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from activities.sql.capability_store import CapabilityStore, load_or_create_kek
from activities.sql.database import Database
from tests.fixtures.postgres import fresh_database
from westworld import capability as cap
from westworld.agents import CapabilityCheckInput

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
ROOT = Path(__file__).parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    database = await fresh_database(url)
    yield database
    await database.close()


@pytest.fixture
async def store(db: Database, tmp_path: Path) -> AsyncIterator[CapabilityStore]:
    s = CapabilityStore(db, load_or_create_kek(tmp_path / "kek.key"))
    await s.rotate_key(NOW)
    for i in range(20):
        await s.add_node(f"n{i:03d}", "eu", None, NOW)
    yield s
    s.close()


def ask(token: str, nodes: list[str], agent: str = "a1") -> CapabilityCheckInput:
    return CapabilityCheckInput(action_id=uuid.uuid4().hex, agent_id=agent, token=token, action="set_config",
                                node_ids=nodes)


async def warm(store: CapabilityStore, token: str, agent: str = "a1") -> None:
    for _ in range(3):  # the token parsed, its chain verified and memoized, the state cached
        assert (await store.check(ask(token, ["n001"], agent), NOW)).result.allowed


def other_process(db: Database, kek: Path, statement: str) -> None:
    """Run ``await store.<statement>`` in a new Python process with a store of its own over the same database."""
    code = (
        "import asyncio\n"
        "from datetime import UTC, datetime\n"
        "from pathlib import Path\n"
        "from activities.sql.capability_store import CapabilityStore, load_or_create_kek\n"
        "from activities.sql.database import Database\n"
        "async def main():\n"
        f"    db = Database({db.url.render_as_string(hide_password=False)!r})\n"
        f"    store = CapabilityStore(db, load_or_create_kek(Path({str(kek)!r})))\n"
        "    now = datetime.now(UTC)\n"
        f"    await store.{statement}\n"
        "    store.close()\n"
        "    await db.close()\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr


async def test_a_revocation_in_another_process_denies_the_next_check(store: CapabilityStore, db: Database,
                                                                     tmp_path: Path) -> None:
    token = await store.mint("a1", ["set_config"])
    await warm(store, token)
    tid = cap.identity_of(token).token_id
    await asyncio.to_thread(other_process, db, tmp_path / "kek.key", f"revoke_token({tid!r}, 'leaked', now)")
    res = (await store.check(ask(token, ["n001"]), NOW)).result
    assert (res.allowed, res.caveat) == (False, cap.REVOKED)


async def test_revoke_all_retire_and_halt_in_another_process_take_effect_at_once(
        store: CapabilityStore, db: Database, tmp_path: Path) -> None:
    kek = tmp_path / "kek.key"
    token = await store.mint("a1", ["set_config"])
    await warm(store, token)
    await asyncio.to_thread(other_process, db, kek, "bump_revocation_epoch()")
    assert (await store.check(ask(token, ["n001"]), NOW)).result.caveat == cap.EPOCH

    fresh = await store.mint("a1", ["set_config"])
    await warm(store, fresh)
    await asyncio.to_thread(other_process, db, kek, f"retire_key({cap.identity_of(fresh).key_id!r})")
    res = (await store.check(ask(fresh, ["n001"]), NOW)).result
    assert (res.allowed, res.caveat) == (False, cap.SIGNATURE) and "unknown root key" in res.reason

    await store.rotate_key(NOW + timedelta(seconds=1))
    third = await store.mint("a1", ["set_config"])
    await warm(store, third)
    await asyncio.to_thread(other_process, db, kek, "set_halt(7, 'drill', now)")
    assert (await store.check(ask(third, ["n001"]), NOW)).result.caveat == cap.HALTED
    await asyncio.to_thread(other_process, db, kek, "end_halt(7, ['g1', 'g2'], now)")
    assert (await store.check(ask(third, ["n001"]), NOW)).result.allowed


async def test_state_written_by_plain_sql_is_seen_by_the_next_check(store: CapabilityStore, db: Database) -> None:
    """An operator's emergency SQL (no store involved): the database's own triggers move the generation."""
    token = await store.mint("a1", ["set_config"])
    await warm(store, token)
    other = Database(db.url.render_as_string(hide_password=False))
    try:
        async with other.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM cap_nodes WHERE node_id = 'n001'"))
        res = (await store.check(ask(token, ["n001"]), NOW)).result
        assert (res.allowed, res.caveat) == (False, "registered-nodes")
        assert (await store.check(ask(token, ["n002"]), NOW)).result.allowed
        async with other.engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO cap_revoked (token_id, reason, at) VALUES (:t, 'sql', :at)"),
                               {"t": cap.identity_of(token).token_id, "at": NOW})
        assert (await store.check(ask(token, ["n002"]), NOW)).result.caveat == cap.REVOKED
    finally:
        await other.close()


async def test_a_release_by_another_store_frees_the_budget_and_a_confirm_does_not(store: CapabilityStore,
                                                                                  db: Database,
                                                                                  tmp_path: Path) -> None:
    other = CapabilityStore(db, load_or_create_kek(tmp_path / "kek.key"))
    token = cap.attenuate(await store.mint("b1", ["set_config"]), ["budget = 4/3600s"])
    first, second = ask(token, ["n001", "n002"], "b1"), ask(token, ["n003", "n004"], "b1")
    assert (await store.check(first, NOW)).result.allowed
    assert (await other.check(second, NOW)).result.allowed  # the other store's reservation counts here too
    assert (await store.check(ask(token, ["n005"], "b1"), NOW)).result.caveat == "budget = 4/3600s"
    await other.settle(second.action_id, confirmed=True, now=NOW)
    assert (await store.check(ask(token, ["n005"], "b1"), NOW)).result.caveat == "budget = 4/3600s"
    await other.settle(first.action_id, confirmed=False, now=NOW)
    assert (await store.check(ask(token, ["n005"], "b1"), NOW)).result.allowed
    other.close()


async def test_no_check_that_starts_after_a_revocation_commits_passes(store: CapabilityStore, db: Database,
                                                                      tmp_path: Path) -> None:
    """Checks stream in concurrently (batched together) while another process revokes the token: every check
    started after that process exited is denied; some before it were allowed."""
    token = await store.mint("a1", ["set_config"])
    await warm(store, token)
    seen: list[tuple[float, bool]] = []
    stop = asyncio.Event()

    async def agent(i: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            res = (await store.check(ask(token, [f"n{i:03d}"]), NOW)).result
            seen.append((started, res.allowed))

    agents = [asyncio.create_task(agent(i)) for i in range(8)]
    await asyncio.sleep(0.2)
    tid = cap.identity_of(token).token_id
    await asyncio.to_thread(other_process, db, tmp_path / "kek.key", f"revoke_token({tid!r}, 'leaked', now)")
    committed = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*agents)
    after = [allowed for started, allowed in seen if started > committed]
    assert after and not any(after), f"{sum(after)} of {len(after)} checks after the revocation passed"
    assert any(allowed for started, allowed in seen if started < committed)


async def test_a_check_waiting_for_another_writer_blocks_not_the_loop_and_sees_its_revocation(
        sqlite_url: str, tmp_path: Path) -> None:
    """SQLite: another connection holds the write lock (and revokes the token inside it); the check waits on its
    own thread while the event loop keeps running, then decides on what that writer committed."""
    db = await fresh_database(sqlite_url)
    store = CapabilityStore(db, load_or_create_kek(tmp_path / "kek.key"))
    try:
        await store.rotate_key(NOW)
        await store.add_node("n001", "eu", None, NOW)
        token = await store.mint("a1", ["set_config"])
        await warm(store, token)
        holder = sqlite3.connect(str(db.url.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO cap_revoked (token_id, reason, at) VALUES (?, 'held', '2026-03-01 12:00:00')",
                       (cap.identity_of(token).token_id,))
        pending = asyncio.create_task(store.check(ask(token, ["n001"]), NOW))
        ticks = 0
        for _ in range(20):  # the loop runs while the check waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not pending.done()
        holder.execute("COMMIT")
        holder.close()
        res = (await asyncio.wait_for(pending, timeout=15)).result
        assert (res.allowed, res.caveat) == (False, cap.REVOKED)
    finally:
        store.close()
        await db.close()


async def test_a_reservation_inserted_by_hand_below_the_highest_id_counts(store: CapabilityStore,
                                                                           db: Database) -> None:
    """New reservations are followed by id; one an operator inserts with a lower (freed) id is seen too."""
    token = cap.attenuate(await store.mint("c1", ["set_config"]), ["budget = 3/3600s"])
    first = ask(token, ["n001"], "c1")
    assert (await store.check(first, NOW)).result.allowed
    assert (await store.check(ask(token, ["n002"], "c1"), NOW)).result.allowed
    async with db.engine.begin() as conn:
        freed = await conn.scalar(sa.text("SELECT id FROM cap_usage WHERE action_id = :a"), {"a": first.action_id})
        await conn.execute(sa.text("DELETE FROM cap_usage WHERE id = :i"), {"i": freed})
    assert (await store.check(ask(token, ["n003"], "c1"), NOW)).result.allowed  # the window is cached again
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO cap_usage (id, agent_id, node_id, action_id, at, state) "
                                   "VALUES (:i, 'c1', 'n009', 'by-hand', :at, 'reserved')"), {"i": freed, "at": NOW})
    res = (await store.check(ask(token, ["n004"], "c1"), NOW)).result
    assert (res.allowed, res.caveat) == (False, "budget = 3/3600s"), res.reason
