"""Reading the audit log's stored tree and rows for :class:`activities.sql.audit_log.AuditLog` (the table's one
writer, whose store this module is part of): the nodes a proof needs, in one query on the driver's own connection,
and every row, in one snapshot, for verification.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database
from activities.sql.schema import audit_entries
from westworld import merkle
from westworld.audit import VerifyReport, timestamp
from westworld.audit_trust import LogVerifier
from westworld.errors import AuditTampered, AuditUnavailable, InvalidInput

READ_CHUNK = 10_000  # rows per fetch when verifying
COLUMNS = ("seq", "kind", "subject", "payload", "leaf_hash", "root_after", "created_at", "nodes")
PG_NODES_AND_SIZE = ("SELECT seq, leaf_hash, nodes, root_after, (SELECT max(seq) FROM audit_entries) "
                     "FROM audit_entries WHERE seq = ANY($1::bigint[])")
Plan = Callable[[int], tuple[list[merkle.Node], list[int]]]  # tree size -> nodes to read, entries whose root to read


@dataclass
class Found:
    """Stored nodes by (level, index), and the roots recorded after the entries asked for."""

    nodes: dict[merkle.Node, bytes]
    roots: dict[int, str]


async def log_size(conn: AsyncConnection) -> int:
    """One past the highest ``seq`` (an index lookup, not a count)."""
    top = await conn.scalar(sa.select(sa.func.max(audit_entries.c.seq)))
    return 0 if top is None else int(top) + 1


def edge(size: int) -> list[merkle.Node]:
    return merkle.range_nodes(0, size) if size else []


def checked_size(top: Any, tree_size: int | None) -> int:
    size = 0 if top is None else int(top) + 1
    if tree_size is None:
        return size
    if tree_size > size:
        raise InvalidInput(f"the audit log has {size} entries, fewer than the tree size {tree_size} asked")
    return tree_size


def node_seqs(
    wanted: Iterable[merkle.Node], lasts: Iterable[int]
) -> tuple[dict[merkle.Node, tuple[int, int]], list[int]]:
    """Where each wanted node is kept, and the rows to read (those, and the entries whose root is asked)."""
    slots = {n: merkle.node_slot(n) for n in wanted}
    return slots, sorted({seq for seq, _ in slots.values()} | {s for s in lasts if s >= 0})


def decode(
    slots: dict[merkle.Node, tuple[int, int]], rows: dict[int, tuple[Any, ...]], lasts: Iterable[int]
) -> Found:
    """The wanted nodes from rows ``seq -> (seq, leaf_hash, nodes, root_after)``.

    Raises:
        AuditTampered: a row that keeps one of the nodes is missing or does not keep it.
    """
    nodes: dict[merkle.Node, bytes] = {}
    for node, (seq, slot) in slots.items():
        row = rows.get(seq)
        text = (row[1] if slot < 0 else row[2][64 * slot:64 * slot + 64]) if row is not None else ""
        try:
            nodes[node] = bytes.fromhex(text)
        except ValueError:
            text = ""
        if len(text) != 64:
            raise AuditTampered(f"audit log: entry {seq}, which keeps tree node {node}, is missing or does not keep "
                                f"it: run `westworld audit verify`")
    return Found(nodes, {s: str(rows[s][3]) for s in lasts if s in rows})


async def stored_nodes(conn: AsyncConnection, wanted: Iterable[merkle.Node], *lasts: int) -> Found:
    """The stored ``wanted`` nodes and the roots recorded after entries ``lasts``, in one query (in ``conn``'s
    transaction)."""
    slots, seqs = node_seqs(wanted, lasts)
    rows = {r[0]: tuple(r) for r in await conn.execute(
        sa.select(audit_entries.c.seq, audit_entries.c.leaf_hash, audit_entries.c.nodes, audit_entries.c.root_after)
        .where(audit_entries.c.seq.in_(seqs)))}
    return decode(slots, rows, lasts)


class ProofReader:
    """What proof reads keep between calls: the log size last seen (PostgreSQL) and one plain connection to an
    SQLite file, used from worker threads one at a time (opened on first use; reads in WAL hold up no append)."""

    def __init__(self, path: str) -> None:
        self.size = 0
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def lookup(self, tree_size: int | None, plan: Plan) -> tuple[int, Found]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot for the size and the rows
            try:
                size = checked_size(conn.execute("SELECT max(seq) FROM audit_entries").fetchone()[0], tree_size)
                wanted, lasts = plan(size)
                slots, seqs = node_seqs(wanted, lasts)
                rows = conn.execute("SELECT seq, leaf_hash, nodes, root_after FROM audit_entries WHERE seq IN "  # noqa: S608
                                    f"({', '.join('?' * len(seqs))})", seqs).fetchall()
            finally:
                conn.execute("COMMIT")
        return size, decode(slots, {r[0]: r for r in rows}, lasts)


def feed_rows(check: LogVerifier, rows: Sequence[tuple[Any, ...]]) -> None:
    for seq, kind, subject, payload, leaf_hash, root_after, created_at, nodes in rows:
        check.feed(int(seq), *(v if type(v) is str else text_of(v)
                               for v in (kind, subject, payload, leaf_hash, root_after, created_at, nodes)))


def verify_sqlite_file(path: str, verifier: Callable[[int], LogVerifier]) -> VerifyReport:
    """Verify in one read snapshot of an SQLite file, on a plain connection (no write lock: appends go on)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN")  # deferred: a WAL read snapshot for the count and the rows alike
        check = verifier(conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0])
        cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_entries ORDER BY seq")  # noqa: S608
        while chunk := cursor.fetchmany(READ_CHUNK):
            feed_rows(check, chunk)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return check.report()


async def lookup(db: Database, reader: ProofReader, tree_size: int | None, plan: Plan) -> tuple[int, Found]:
    """The tree size (``tree_size``, checked against the log, or the log's) and the nodes and roots ``plan``
    asks for at that size, by index lookups on the driver's own connection (no write lock). On PostgreSQL one round
    trip when the log's size is the one last seen (the rows and the size in one query), else two."""
    if sqlite_file(db) is not None:
        return await asyncio.to_thread(reader.lookup, tree_size, plan)
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                raise AuditUnavailable(f"audit log at {db.safe_url}: no database connection")
            guess = tree_size if tree_size is not None else reader.size
            try:
                wanted, lasts = plan(guess) if guess else ([], [])
            except InvalidInput:  # not within the size last seen: the log grew since
                wanted, lasts = [], []
            if wanted:
                slots, seqs = node_seqs(wanted, lasts)
                rows = await driver.fetch(PG_NODES_AND_SIZE, seqs)
                if rows and (size := checked_size(rows[0][4], tree_size)) == guess:
                    reader.size = size if tree_size is None else reader.size
                    return size, decode(slots, {r[0]: tuple(r) for r in rows}, lasts)
            size = checked_size(await driver.fetchval("SELECT max(seq) FROM audit_entries"), tree_size)
            reader.size = size if tree_size is None else reader.size
            wanted, lasts = plan(size)
            slots, seqs = node_seqs(wanted, lasts)
            rows = await driver.fetch(PG_NODES_AND_SIZE, seqs)
        else:
            size = checked_size(await conn.scalar(sa.select(sa.func.max(audit_entries.c.seq))), tree_size)
            wanted, lasts = plan(size)
            slots, seqs = node_seqs(wanted, lasts)
            rows = list(await conn.execute(sa.select(
                audit_entries.c.seq, audit_entries.c.leaf_hash, audit_entries.c.nodes, audit_entries.c.root_after,
            ).where(audit_entries.c.seq.in_(seqs))))
    return size, decode(slots, {r[0]: tuple(r) for r in rows}, lasts)


async def verify_rows(db: Database, verifier: Callable[[int], LogVerifier]) -> VerifyReport:
    """Every row read in one snapshot and fed to ``verifier(row count)`` one chunk at a time in a thread (constant
    memory; the event loop keeps serving); on an SQLite file through a connection of its own (no write lock)."""
    if (path := sqlite_file(db)) is not None:
        return await asyncio.to_thread(verify_sqlite_file, path, verifier)
    cols = [c if c.name == "seq" else sa.type_coerce(c, sa.String).label(c.name) for c in audit_entries.c]
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot: count and rows
        check = verifier(int(await conn.scalar(sa.select(sa.func.count()).select_from(audit_entries)) or 0))
        result = await conn.stream(sa.select(*cols).order_by(audit_entries.c.seq))
        async for chunk in result.partitions(READ_CHUNK):
            await asyncio.to_thread(feed_rows, check, [tuple(r) for r in chunk])
    return check.report()


def sqlite_file(db: Database) -> str | None:
    """The path of an SQLite database file (None for PostgreSQL, memory or URI databases)."""
    path = db.url.database
    return path if db.dialect == "sqlite" and path and not path.startswith(("file:", ":memory:")) else None


def text_of(value: Any) -> str:
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return "" if value is None else str(value)
