"""The audit log: the append-only, RFC 6962 Merkle-tree log over table ``audit_entries`` (its one writer), and how
its rows read back for verification and display.

Appends are grouped: every append waiting while a transaction commits goes into the next one (up to
:data:`MAX_BATCH` entries), each with its own ``seq``, leaf hash and root after it, and one signed head per
transaction. Each row also keeps the roots of the perfect subtrees its append completed (column ``nodes``), so a
proof at any size reads O(log n) rows (:mod:`westworld.merkle`), and a restarted writer finds the right edge of
the tree in O(log n) rows too. Verification streams the rows through :class:`westworld.audit_trust.LogVerifier`
in constant memory, off the event loop. How proofs and verification read the table: :mod:`activities.sql.audit_reads`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.audit_heads import HeadSigner, read_heads
from activities.sql.audit_reads import (
    COLUMNS,
    Found,
    ProofReader,
    edge,
    log_size,
    lookup,
    stored_nodes,
    text_of,
    verify_rows,
)
from activities.sql.database import Database
from activities.sql.schema import audit_entries
from westworld import merkle
from westworld.audit import (
    AuditEntry,
    AuditReceipt,
    ConsistencyProof,
    InclusionProof,
    StoredEntry,
    TreeHead,
    VerifyReport,
    canonical_leaf,
    canonical_payload,
    parse_json,
    parse_time,
    timestamp,
)
from westworld.audit_anchor import AnchoredHead
from westworld.audit_trust import LogVerifier
from westworld.errors import AuditTampered, AuditUnavailable, InvalidInput

AUDIT_LOCK_KEY = 0x5745_5354_4155_4454  # "WESTAUDT": the PostgreSQL advisory lock serialising appends
APPEND_ATTEMPTS = 5
MAX_BATCH = 5000  # entries per transaction: enough to amortise the commit, small enough to keep it short
PG_TYPES = ("bigint", "text", "text", "text", "text", "text", "timestamptz", "text")
# Both statements are built from the constants above only (no input reaches them: values are bound).
PG_INSERT = sa.text(f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
                    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(COLUMNS, PG_TYPES, strict=True)) + ")")
SQLITE_INSERT = f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
log = logging.getLogger("westworld.audit")

Item = tuple[str, str, str]  # kind, subject, canonical payload text


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Waiting:
    items: list[Item]
    done: asyncio.Future[list[AuditReceipt]]


class AuditLog:
    """The append-only, RFC 6962 Merkle-tree audit log over ``audit_entries``.

    Appends are serialised in this process by one drain task and across processes by the primary key (SQLite) or
    a transaction-level advisory lock (PostgreSQL). The right edge of the tree (:class:`merkle.Frontier`) is
    restored from the stored nodes on first use and caught up with other writers' rows before every batch, so an
    append costs O(log n) hashing. With a :class:`HeadSigner` every transaction's last head is signed and kept
    apart from the database, and :meth:`verify` checks the log against those heads.
    """

    def __init__(self, db: Database, heads: HeadSigner | None = None) -> None:
        self._db = db
        self._frontier = merkle.Frontier()
        self._waiting: list[_Waiting] = []
        self._drain: asyncio.Task[None] | None = None
        self._sign_lock = asyncio.Lock()
        self._reader = ProofReader(db.url.database or "")
        self.heads = heads

    async def append(self, kind: str, subject: str, payload: dict[str, Any]) -> AuditReceipt:
        """Append one entry and return where it landed.

        Raises:
            InvalidInput: the payload is not JSON-serialisable.
            AuditTampered: the stored log has a gap, so extending it would hide the damage.
            AuditUnavailable: the database cannot be written; the caller must refuse its decision.
        """
        [receipt] = await self.append_many([(kind, subject, payload)])
        return receipt

    async def append_many(self, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> list[AuditReceipt]:
        """Append entries in order, in one transaction (with other appends waiting at the same time); their
        receipts, in order. Raises as :meth:`append` does; then none of them is in the log."""
        items: list[Item] = []
        for kind, subject, payload in entries:
            try:
                text = canonical_payload(payload)
                (kind + subject + text).encode()  # a lone surrogate: refused here, not in the middle of a batch
            except (TypeError, ValueError) as err:
                raise InvalidInput(f"audit payload for {kind} {subject} is not plain JSON: {err}") from err
            if self._db.dialect == "postgresql" and "\x00" in kind + subject + text:
                raise InvalidInput(f"audit entry {kind} {subject}: PostgreSQL text cannot hold a NUL character")
            items.append((kind, subject, text))
        if not items:
            return []
        waiting = _Waiting(items, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_waiting())
        # A caller cancelled meanwhile leaves its entries to be written (or refused) with the others.
        return await asyncio.shield(waiting.done)

    async def _drain_waiting(self) -> None:
        while self._waiting:
            batch: list[_Waiting] = []
            count = 0
            while self._waiting and (not batch or count + len(self._waiting[0].items) <= MAX_BATCH):
                batch.append(self._waiting.pop(0))
                count += len(batch[-1].items)
            try:
                receipts = await self._write([item for w in batch for item in w.items])
            except Exception as err:  # every waiter of the batch gets the refusal; the drain goes on
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(err)
                continue
            except BaseException:  # cancelled (the loop is closing): the waiters must not wait forever
                for w in batch + self._waiting:
                    if not w.done.done():
                        w.done.set_exception(AuditUnavailable(f"audit log at {self._db.safe_url}: the append was "
                                                              f"interrupted; the decision is refused"))
                raise
            at = 0
            for w in batch:
                if not w.done.done():
                    w.done.set_result(receipts[at:at + len(w.items)])
                at += len(w.items)

    async def _write(self, items: list[Item]) -> list[AuditReceipt]:
        for _ in range(APPEND_ATTEMPTS):
            try:
                receipts = await self._write_once(items)
            except IntegrityError:
                continue  # another writer took these seqs; catch up and retry
            except (SQLAlchemyError, OSError, TimeoutError) as err:
                raise AuditUnavailable(
                    f"audit log at {self._db.safe_url} cannot be written ({type(err).__name__}: "
                    f"{_first_line(err)}); the decision is refused"
                ) from err
            self._sign(receipts[-1].tree_size, receipts[-1].root)
            return receipts
        raise AuditUnavailable(f"audit log at {self._db.safe_url}: {APPEND_ATTEMPTS} appends in a row collided "
                               f"with another writer; the decision is refused")

    def _sign(self, tree_size: int, root: str) -> None:
        """Sign the new head; the entries are committed already, so a failure here only lets the heads file lag."""
        if self.heads is None:
            return
        try:
            self.heads.sign(tree_size, root)
        except OSError as err:
            log.error("audit head %d not signed (%s): the heads file lags the log until the next append",
                      tree_size, err)

    async def sign_current_head(self) -> None:
        """On a first start with signed heads, sign the log as it is (trust on first use); later a no-op."""
        if self.heads is not None and not self.heads.has_heads():
            async with self._sign_lock:
                head = await self.head()
                self._sign(head.tree_size, head.root)

    async def _write_once(self, items: list[Item]) -> list[AuditReceipt]:
        rows: list[tuple[Any, ...]] = []
        receipts: list[AuditReceipt] = []
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
            frontier = await self._caught_up(conn)
            for kind, subject, payload_json in items:
                created_at = _utcnow()
                leaf = merkle.leaf_hash(canonical_leaf(kind, subject, payload_json, timestamp(created_at)))
                nodes = "".join(h.hex() for h in frontier.append(leaf))
                root, seq, leaf_hex = frontier.root().hex(), frontier.size - 1, leaf.hex()
                rows.append((seq, kind, subject, payload_json, leaf_hex, root, created_at, nodes))
                receipts.append(AuditReceipt.model_construct(seq=seq, leaf_hash=leaf_hex, root=root,
                                                             tree_size=seq + 1))
            await self._insert(conn, rows)
        if frontier.size > self._frontier.size:
            self._frontier = frontier  # adopted only once the rows are committed
        return receipts

    async def _insert(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows in one statement (PostgreSQL: ``unnest`` of one array per column) or one driver-level
        executemany (SQLite, times in the text form SQLAlchemy's DateTime stores), without per-row processing."""
        if self._db.dialect == "postgresql":
            await conn.execute(PG_INSERT, dict(zip(COLUMNS, map(list, zip(*rows, strict=True)), strict=True)))
        elif self._db.dialect == "sqlite":
            await conn.exec_driver_sql(SQLITE_INSERT, [(*r[:6], _sqlite_time(r[6]), r[7]) for r in rows])
        else:
            await conn.execute(sa.insert(audit_entries), [dict(zip(COLUMNS, r, strict=True)) for r in rows])

    async def _caught_up(self, conn: AsyncConnection) -> merkle.Frontier:
        """A copy of the frontier extended with rows other writers (or earlier runs) committed."""
        frontier = self._frontier.copy() if self._frontier.size else await self._restored(conn)
        start = max(frontier.size - 1, 0)  # re-read our own last entry: it must still be there
        rows = list(await conn.execute(
            sa.select(audit_entries.c.seq, audit_entries.c.leaf_hash)
            .where(audit_entries.c.seq >= start).order_by(audit_entries.c.seq)
        ))
        if frontier.size and (not rows or rows[0].seq != start):
            raise AuditTampered(f"audit log at {self._db.safe_url}: entry {start}, appended earlier, is gone; "
                                f"refusing to extend a damaged log: run `westworld audit verify`")
        for seq, leaf_hex in rows[1 if frontier.size else 0:]:
            if seq != frontier.size:
                raise AuditTampered(f"audit log at {self._db.safe_url} has no entry {frontier.size} (next is {seq}); "
                                    f"refusing to extend a damaged log: run `westworld audit verify`")
            frontier.append(bytes.fromhex(leaf_hex))
        return frontier

    async def _restored(self, conn: AsyncConnection) -> merkle.Frontier:
        """The right edge of the stored tree from its nodes, when they agree with the last root and no row is
        missing; else the empty frontier (the caller then rebuilds it from every leaf hash and names a gap)."""
        size = await log_size(conn)
        if not size or await conn.scalar(sa.select(sa.func.count()).select_from(audit_entries)) != size:
            return merkle.Frontier()
        edge = merkle.range_nodes(0, size)
        try:
            found = await stored_nodes(conn, edge, size - 1)
        except AuditTampered:
            return merkle.Frontier()
        hashes = [found.nodes[n] for n in edge]
        ok = merkle.fold(hashes).hex() == found.roots.get(size - 1)
        return merkle.Frontier(size, hashes) if ok else merkle.Frontier()

    async def _sized(self, conn: AsyncConnection, tree_size: int | None) -> int:
        size = await log_size(conn)
        if tree_size is None:
            return size
        if tree_size > size:
            raise InvalidInput(f"the audit log has {size} entries, fewer than the tree size {tree_size} asked")
        return tree_size

    async def root(self, tree_size: int | None = None) -> str:
        """The hex root of the first ``tree_size`` entries (all of them by default), as recorded after the last."""
        async with self._db.engine.connect() as conn:
            size = await self._sized(conn, tree_size)
            if size == 0:
                return merkle.EMPTY_ROOT.hex()
            root = await conn.scalar(sa.select(audit_entries.c.root_after).where(audit_entries.c.seq == size - 1))
        if root is None:
            raise AuditTampered(f"audit log at {self._db.safe_url} has no entry {size - 1}: run `westworld audit "
                                f"verify`")
        return str(root)

    async def head(self) -> TreeHead:
        """The current size and root."""
        async with self._db.engine.connect() as conn:
            size = await log_size(conn)
        return TreeHead(tree_size=size, root=await self.root(size))

    async def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` entries (the whole log by default), from
        O(log n) stored nodes read in one query."""

        def plan(size: int) -> tuple[list[merkle.Node], list[int]]:
            if not 0 <= seq < size:
                raise InvalidInput(f"audit entry {seq} is not in a tree of {size} entries")
            path = merkle.inclusion_nodes(seq, size)
            return [(0, seq), *merkle.range_nodes(0, size), *(n for part in path for n in part)], [size - 1]

        size, found = await lookup(self._db, self._reader, tree_size, plan)
        path = merkle.inclusion_nodes(seq, size)
        return InclusionProof(seq=seq, tree_size=size, leaf_hash=found.nodes[(0, seq)].hex(),
                              root=self._checked_root(found, size),
                              path=[merkle.fold([found.nodes[n] for n in part]).hex() for part in path])

    async def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the log of ``new_size`` entries (all by default) extends its first ``old_size``, from
        O(log n) stored nodes read in one query."""

        def plan(size: int) -> tuple[list[merkle.Node], list[int]]:
            if not 0 <= old_size <= size:
                raise InvalidInput(f"old size {old_size} is not within a log of {size} entries")
            path = merkle.consistency_nodes(old_size, size)
            edges = [*edge(old_size), *edge(size)]
            return [*edges, *(n for part in path for n in part)], [old_size - 1, size - 1]

        size, found = await lookup(self._db, self._reader, new_size, plan)
        return ConsistencyProof(old_size=old_size, new_size=size, old_root=self._checked_root(found, old_size),
                                new_root=self._checked_root(found, size),
                                path=[merkle.fold([found.nodes[n] for n in part]).hex()
                                      for part in merkle.consistency_nodes(old_size, size)])

    def _checked_root(self, found: Found, size: int) -> str:
        """The root folded from the stored nodes, which must be the root recorded after entry ``size - 1``."""
        if size == 0:
            return merkle.EMPTY_ROOT.hex()
        root = merkle.fold([found.nodes[n] for n in merkle.range_nodes(0, size)]).hex()
        if root != (recorded := found.roots.get(size - 1, "")):
            raise AuditTampered(f"audit log at {self._db.safe_url}: the stored tree nodes fold to {root[:16]}… but "
                                f"entry {size - 1} records the root {recorded[:16] or 'none'}…: run `westworld audit "
                                f"verify`")
        return root

    async def latest(self, n: int) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first; an unreadable payload or time is named in ``problem``."""
        cols = [c if c.name == "seq" else sa.type_coerce(c, sa.String).label(c.name) for c in audit_entries.c]
        query = sa.select(*cols).order_by(audit_entries.c.seq.desc()).limit(n)
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [readable_entry(stored_entry(r._mapping)) for r in reversed(rows)]

    async def verify(self, trusted: TreeHead | None = None, anchor: AnchoredHead | None = None) -> VerifyReport:
        """Recompute every leaf and root from the stored payloads, and check the log against its signed heads
        (when it has a signer), the given on-chain ``anchor`` and a ``trusted`` earlier head.

        The rows are read in one snapshot and checked one chunk at a time in a thread (constant memory; the event
        loop keeps serving); on SQLite through a connection of its own that takes no write lock.
        """
        heads = read_heads(self.heads.heads_file) if self.heads is not None else None
        key = self.heads.public_key if self.heads is not None else ""

        def verifier(size: int) -> LogVerifier:
            return LogVerifier(size, heads=heads, public_key=key, anchor=anchor, trusted=trusted)

        return await verify_rows(self._db, verifier)


def _sqlite_time(at: datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite ``DateTime`` stores it (``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [repr(err)])[0]


def stored_entry(row: Any) -> StoredEntry:
    """A row (a mapping of column name to stored value) as text for verification."""
    return StoredEntry(seq=int(row["seq"]), payload_json=text_of(row["payload"]), **{
        k: text_of(row[k]) for k in ("kind", "subject", "leaf_hash", "root_after", "created_at")})


def readable_entry(e: StoredEntry) -> AuditEntry:
    """An entry for display: its payload and time parsed, or ``problem`` saying why they cannot be."""
    problem, created_at = None, datetime.fromtimestamp(0, UTC)
    payload: dict[str, Any] = {}
    try:
        value = parse_json(e.payload_json)
        payload = value if isinstance(value, dict) else {"value": value}
    except ValueError as err:
        problem = f"payload unreadable: {err}"
    try:
        created_at = parse_time(e.created_at)
    except ValueError:
        problem = problem or f"creation time {e.created_at[:40]!r} is not an ISO 8601 time"
    return AuditEntry(seq=e.seq, kind=e.kind, subject=e.subject, payload=payload, leaf_hash=e.leaf_hash,
                      root_after=e.root_after, created_at=created_at, problem=problem)
