"""Audit log benchmark: batched appends/s, inclusion and consistency proof latency at two sizes (default 1M and 3M
entries: building 10M takes ~20-30 min on these 2 shared cores; `--sizes 1000000,10000000` runs it), and
`audit verify` time at each, on SQLite and on PostgreSQL, each figure a ratio to floors measured in the same
run on the same database: one bare single-row INSERT in its own transaction, one bare SHA-256 of 64 bytes, and
(for throughput) a bare executemany of the same number of rows of the same shape.

Every time here is caller-observed, in this process (no Temporal: the audit activities are thin wrappers around
these calls). The log is built through the production batched path (``AuditLog.append_many``, one transaction per
``MAX_BATCH`` entries, one signed head each) and its build time is printed. PostgreSQL is started the way the test
fixture starts it (``tests/fixtures/postgres.py``: the distribution's binaries, ``fsync=off``), SQLite runs in WAL
with ``synchronous=NORMAL`` as the project configures it; the floors run on the same settings.

    python -m tests.bench.audit_log [--sizes 1000000,3000000] [--db sqlite,postgres] [--appends 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from activities.audit_heads import HeadSigner
from activities.sql.audit_log import MAX_BATCH, AuditLog
from activities.sql.database import Database
from tests.bench.lifecycle import stop_on_signals
from tests.fixtures.postgres import DATABASE, _as_user, _run, find_pg_bin
from westworld import merkle
from workers.stack.processes import free_port

PROOFS = 300


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster, as the test fixture ``postgres_url`` starts it; its asyncpg URL."""
    bins = {name: find_pg_bin(name) for name in ("initdb", "pg_ctl", "createdb")}
    if any(path is None for path in bins.values()):
        raise SystemExit("PostgreSQL is not installed (apt-get install -y postgresql)")
    prefix, user = _as_user()
    base = Path(tempfile.mkdtemp(prefix="westworld-bench-pg-"))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log, port = base / "data", base / "postgres.log", free_port()
    _run(prefix, [str(bins["initdb"]), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions"], "initdb")
    options = f"-h 127.0.0.1 -p {port} -F -c unix_socket_directories='' -c full_page_writes=off"
    pg_ctl = [str(bins["pg_ctl"]), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
    _run(prefix, [*pg_ctl, "-o", options, "start"], f"starting PostgreSQL on 127.0.0.1:{port}", log)
    try:
        _run(prefix, [str(bins["createdb"]), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE],
             "createdb", log)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        _run(prefix, [*pg_ctl, "-m", "immediate", "stop"], "stopping PostgreSQL", log)
        shutil.rmtree(base, ignore_errors=True)


def sha256_floor() -> float:
    """Seconds per bare SHA-256 of 64 bytes (a node hash's input size), best of 3 runs of 200k."""
    data, best = bytes(64), float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(200_000):
            hashlib.sha256(data).digest()
        best = min(best, (time.perf_counter() - start) / 200_000)
    return best


FLOOR = sa.Table("bench_floor", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("v", sa.Text, nullable=False))


async def insert_floors(db: Database, rows: int) -> tuple[float, float, float]:
    """(seconds per bare one-row INSERT in its own transaction, seconds per row of a bare ``rows``-row executemany,
    seconds per bare one-row read by primary key) on a scratch table of the same database, through the same
    engine."""
    async with db.engine.begin() as conn:
        await conn.run_sync(FLOOR.drop, checkfirst=True)
        await conn.run_sync(FLOOR.create)
    n = 2000
    start = time.perf_counter()
    for i in range(n):
        async with db.engine.begin() as conn:
            await conn.execute(sa.insert(FLOOR).values(id=i, v="x" * 200))
    one = (time.perf_counter() - start) / n
    best = float("inf")
    for attempt in range(3):
        batch = [{"id": n + attempt * rows + i, "v": "x" * 400} for i in range(rows)]
        start = time.perf_counter()
        async with db.engine.begin() as conn:
            await conn.execute(sa.insert(FLOOR), batch)
        best = min(best, (time.perf_counter() - start) / rows)
    start = time.perf_counter()
    for i in range(n):
        async with db.engine.connect() as conn:
            await conn.scalar(sa.select(FLOOR.c.v).where(FLOOR.c.id == i))
    read = (time.perf_counter() - start) / n
    async with db.engine.begin() as conn:
        await conn.run_sync(FLOOR.drop)
    return one, best, read


def entry(i: int) -> tuple[str, str, dict[str, Any]]:
    return "vote.result", f"proposal-{i}", {"decision": "approved", "i": i, "tally": {"for": 3 * i, "against": i}}


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def reads_per_proof(seq: int, size: int) -> int:
    """Rows one inclusion proof reads (O(log n)): the rows the store's one node query asks for."""
    plan = merkle.inclusion_nodes(seq, size)
    wanted = [(0, seq), *merkle.range_nodes(0, size), *(n for part in plan for n in part)]
    return len({merkle.node_slot(n)[0] for n in wanted} | {size - 1})


def line(what: str, seconds: float, insert: float, sha: float, read: float) -> None:
    print(f"  {what:24} {seconds * 1e3:8.3f} ms = {seconds / insert:7.3f}x bare insert = {seconds / read:6.2f}x bare "
          f"read by key = {seconds / sha:7.0f}x bare SHA-256", flush=True)


async def bench_db(kind: str, url: str, sizes: list[int], appends: int, sha: float, tmp: Path) -> None:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS audit_entries"))
        await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    await db.migrate()
    print(f"\n--- {kind} ({db.safe_url}) ---", flush=True)
    insert, batch_row, read = await insert_floors(db, MAX_BATCH)
    print(f"  floors: bare one-row INSERT + commit {insert * 1e3:.3f} ms ({1 / insert:,.0f}/s); bare "
          f"{MAX_BATCH}-row executemany {batch_row * 1e6:.2f} us/row ({1 / batch_row:,.0f} rows/s); bare one-row "
          f"read by key {read * 1e3:.3f} ms; bare SHA-256 {sha * 1e6:.3f} us", flush=True)
    heads = tmp / kind
    heads.mkdir()
    log = AuditLog(db, HeadSigner.in_dir(heads))

    # (a) appends/s: one caller with batches, and many concurrent callers of append() grouped by the log
    n_batches = max(appends // MAX_BATCH, 1)
    batches = [[entry(b * MAX_BATCH + i) for i in range(MAX_BATCH)] for b in range(n_batches)]  # built untimed
    spent = await timed(lambda: asyncio.gather(*(log.append_many(b) for b in batches)))
    rate = n_batches * MAX_BATCH / spent
    print(f"  appends, append_many of {MAX_BATCH}: {rate:,.0f}/s = {rate * insert:.1f}x bare one-row inserts/s "
          f"= {rate * batch_row:.2f}x bare executemany rows/s; per append {spent / (n_batches * MAX_BATCH) / sha:.0f}x "
          f"a bare SHA-256", flush=True)
    callers = 500
    per_caller = max(appends // callers, 1)
    latencies: list[float] = []
    entries = [entry(i) for i in range(callers * per_caller)]

    async def caller(c: int) -> None:
        for i in range(per_caller):
            start = time.perf_counter()
            await log.append(*entries[c * per_caller + i])
            latencies.append(time.perf_counter() - start)

    spent = await timed(lambda: asyncio.gather(*(caller(c) for c in range(callers))))
    rate = callers * per_caller / spent
    p50, p99 = (statistics.quantiles(latencies, n=100)[k] for k in (49, 98))
    print(f"  appends, {callers} concurrent append() callers: {rate:,.0f}/s = {rate * insert:.1f}x bare one-row "
          f"inserts/s = {rate * batch_row:.2f}x bare executemany rows/s; latency p50 {p50 * 1e3:.1f} ms "
          f"({p50 / insert:.1f}x bare insert), p99 {p99 * 1e3:.1f} ms", flush=True)

    # (b) proofs at each size, the log built through append_many
    built, build_time = (await log.head()).tree_size, 0.0
    rng = random.Random(1)  # positions to prove
    for target in sizes:
        before = built
        start = time.perf_counter()
        while built < target:  # 8 batches in flight: while one commits, the next is hashed
            step = min(MAX_BATCH * 8, target - built)
            await asyncio.gather(*(log.append_many([entry(built + j) for j in range(i, min(i + MAX_BATCH, step))])
                                   for i in range(0, step, MAX_BATCH)))
            built += step
        spent, size = time.perf_counter() - start, built  # the throughput runs above may have gone past it
        build_time += spent
        print(f"  built to {size:,} entries through append_many: {build_time:.0f} s in all ({size - before:,} "
              f"entries in {spent:.0f} s, {(size - before) / max(spent, 1e-9):,.0f}/s)", flush=True)
        incl, cons = [], []
        for _ in range(PROOFS):
            seq = rng.randrange(size)
            start = time.perf_counter()
            proof = await log.inclusion_proof(seq)
            incl.append(time.perf_counter() - start)
            assert proof.tree_size == size and proof.verify(), "inclusion proof does not verify"
            old = rng.randrange(1, size)
            start = time.perf_counter()
            consistency = await log.consistency_proof(old)
            cons.append(time.perf_counter() - start)
            assert consistency.verify(), "consistency proof does not verify"
        reads = statistics.mean([reads_per_proof(rng.randrange(size), size) for _ in range(100)])
        print(f"  at {size:,} entries ({reads:.1f} rows read per inclusion proof, in one node query):", flush=True)
        for what, times in (("inclusion proof p50", incl), ("consistency proof p50", cons)):
            line(what, statistics.median(times), insert, sha, read)
            line(what.replace("p50", "p99"), statistics.quantiles(times, n=100)[98], insert, sha, read)

        # (c) audit verify at this size (the whole log recomputed, signed heads checked)
        start = time.perf_counter()
        report = await log.verify()
        spent = time.perf_counter() - start
        assert report.ok and report.tree_size == size, report.problems[:3]
        print(f"  audit verify of {size:,} entries: {spent:.1f} s = {spent / size * 1e6:.1f} us/entry "
              f"= {spent / size / sha:.0f}x a bare SHA-256 per entry = {spent / size / insert:.3f}x a bare insert "
              f"per entry", flush=True)
    await db.close()


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print("audit log bench: every time is caller-observed in this process (the store's own calls, no Temporal); "
          "ratios are to floors measured in this run on the same database", flush=True)
    sha = sha256_floor()
    with tempfile.TemporaryDirectory(prefix="westworld-bench-audit-") as tmp:
        for kind in args.db.split(","):
            if kind == "sqlite":
                await bench_db(kind, f"sqlite+aiosqlite:///{Path(tmp) / 'audit.db'}", sizes, args.appends, sha,
                               Path(tmp))
            else:
                with postgres() as url:
                    await bench_db(kind, url, sizes, args.appends, sha, Path(tmp))


def main() -> int:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000", help="log sizes to measure proofs and verify at")
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--appends", type=int, default=50_000, help="appends per throughput figure")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
