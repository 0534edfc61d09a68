"""The audit log: the append-only, RFC 6962 Merkle-tree log over table ``audit_entries`` (its one writer), and how
its rows read back for verification and display.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.audit_heads import HeadSigner, read_heads
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
    canonical_json,
    consistency_proof_of,
    entry_leaf,
    inclusion_proof_of,
    parse_json,
    parse_time,
    timestamp,
)
from westworld.audit_anchor import AnchoredHead
from westworld.audit_trust import verify_log
from westworld.errors import AuditTampered, AuditUnavailable, InvalidInput

AUDIT_LOCK_KEY = 0x5745_5354_4155_4454  # "WESTAUDT": the PostgreSQL advisory lock serialising appends
APPEND_ATTEMPTS = 5
log = logging.getLogger("westworld.audit")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """The append-only, RFC 6962 Merkle-tree audit log over ``audit_entries``.

    Appends are serialised in this process by a lock and across processes by the primary key (SQLite) or a
    transaction-level advisory lock (PostgreSQL). The right edge of the tree (:class:`merkle.Frontier`) is
    rebuilt lazily from the stored leaf hashes on first use and caught up with other writers' rows before
    every append, so an append costs O(log n) hashing. With a :class:`HeadSigner` every new head is signed and
    kept apart from the database, and :meth:`verify` checks the log against those heads.
    """

    def __init__(self, db: Database, heads: HeadSigner | None = None) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._frontier = merkle.Frontier()
        self.heads = heads

    async def append(self, kind: str, subject: str, payload: dict[str, Any]) -> AuditReceipt:
        """Append one entry and return where it landed.

        Raises:
            InvalidInput: the payload is not JSON-serialisable.
            AuditTampered: the stored log has a gap, so extending it would hide the damage.
            AuditUnavailable: the database cannot be written; the caller must refuse its decision.
        """
        try:
            payload_json = canonical_json(payload)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"audit payload for {kind} {subject} is not plain JSON: {err}") from err
        async with self._lock:
            for _ in range(APPEND_ATTEMPTS):
                try:
                    receipt = await self._append_once(kind, subject, payload_json)
                except IntegrityError:
                    continue  # another writer took this seq; catch up and retry
                except (SQLAlchemyError, OSError, TimeoutError) as err:
                    raise AuditUnavailable(
                        f"audit log at {self._db.safe_url} cannot be written ({type(err).__name__}: "
                        f"{_first_line(err)}); the decision is refused"
                    ) from err
                self._sign(receipt.tree_size, receipt.root)
                return receipt
        raise AuditUnavailable(f"audit log at {self._db.safe_url}: {APPEND_ATTEMPTS} appends in a row collided "
                               f"with another writer; the decision is refused")

    def _sign(self, tree_size: int, root: str) -> None:
        """Sign the new head; the entry is committed already, so a failure here only lets the heads file lag."""
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
            async with self._lock:
                head = await self.head()
                self._sign(head.tree_size, head.root)

    async def _append_once(self, kind: str, subject: str, payload_json: str) -> AuditReceipt:
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
            frontier = await self._caught_up(conn)
            created_at = _utcnow()
            leaf = merkle.leaf_hash(entry_leaf(kind, subject, payload_json, created_at))
            frontier.append(leaf)
            root = frontier.root().hex()
            await conn.execute(sa.insert(audit_entries).values(
                seq=frontier.size - 1, kind=kind, subject=subject, payload=payload_json, leaf_hash=leaf.hex(),
                root_after=root, created_at=created_at,
            ))
        self._frontier = frontier  # adopted only once the row is committed
        return AuditReceipt(seq=frontier.size - 1, leaf_hash=leaf.hex(), root=root, tree_size=frontier.size)

    async def _caught_up(self, conn: AsyncConnection) -> merkle.Frontier:
        """A copy of the frontier extended with rows other writers (or earlier runs) committed."""
        frontier = self._frontier.copy()
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

    async def _leaf_hashes(self, tree_size: int | None) -> list[bytes]:
        query = sa.select(audit_entries.c.leaf_hash).order_by(audit_entries.c.seq)
        if tree_size is not None:
            query = query.where(audit_entries.c.seq < tree_size)
        async with self._db.engine.connect() as conn:
            hashes = [bytes.fromhex(h) for h in (await conn.execute(query)).scalars()]
        if tree_size is not None and len(hashes) < tree_size:
            raise InvalidInput(f"the audit log has {len(hashes)} entries, fewer than the tree size {tree_size} asked")
        return hashes

    async def root(self, tree_size: int | None = None) -> str:
        """The hex root of the first ``tree_size`` entries (all of them by default)."""
        return merkle.root_of_hashes(await self._leaf_hashes(tree_size)).hex()

    async def head(self) -> TreeHead:
        """The current size and root."""
        hashes = await self._leaf_hashes(None)
        return TreeHead(tree_size=len(hashes), root=merkle.root_of_hashes(hashes).hex())

    async def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` entries (the whole log by default)."""
        return inclusion_proof_of(await self._leaf_hashes(tree_size), seq)

    async def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the log of ``new_size`` entries (all by default) extends its first ``old_size``."""
        return consistency_proof_of(await self._leaf_hashes(new_size), old_size)

    async def _stored(self, last: int | None = None) -> list[StoredEntry]:
        """Rows as stored text (no type processing, so a malformed column cannot crash the read)."""
        cols = [c if c.name == "seq" else sa.type_coerce(c, sa.String).label(c.name) for c in audit_entries.c]
        query = sa.select(*cols).order_by(audit_entries.c.seq)
        if last is not None:
            query = sa.select(*cols).order_by(audit_entries.c.seq.desc()).limit(last)
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [stored_entry(r._mapping) for r in (reversed(rows) if last is not None else rows)]

    async def latest(self, n: int) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first; an unreadable payload or time is named in ``problem``."""
        return [readable_entry(e) for e in await self._stored(n)]

    async def verify(self, trusted: TreeHead | None = None, anchor: AnchoredHead | None = None) -> VerifyReport:
        """Recompute every leaf and root from the stored payloads, and check the log against its signed heads
        (when it has a signer), the given on-chain ``anchor`` and a ``trusted`` earlier head."""
        entries = await self._stored()
        if self.heads is None:
            return verify_log(entries, anchor=anchor, trusted=trusted)
        return verify_log(entries, heads=read_heads(self.heads.heads_file), public_key=self.heads.public_key,
                          anchor=anchor, trusted=trusted)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [repr(err)])[0]


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return "" if value is None else str(value)


def stored_entry(row: Any) -> StoredEntry:
    """A row (a mapping of column name to stored value) as text for verification."""
    return StoredEntry(seq=int(row["seq"]), payload_json=_text(row["payload"]), **{
        k: _text(row[k]) for k in ("kind", "subject", "leaf_hash", "root_after", "created_at")})


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
