"""The project's one SQL layer (SQLAlchemy Core, async): SQLite in the data dir by default, PostgreSQL by URL.

Holds the audit log (append-only, RFC 6962 Merkle tree over its entries) and the votes of every proposal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from westworld import merkle
from westworld.audit import (
    AuditEntry,
    AuditProblem,
    AuditReceipt,
    InclusionProof,
    VerifyReport,
    canonical_json,
    leaf_data,
)
from westworld.errors import VOTE_ALREADY_CAST, AuditUnavailable, VoteRejected

metadata = sa.MetaData()

audit_entries = sa.Table(
    "audit_entries", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
    sa.Column("root_after", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

votes = sa.Table(
    "votes", metadata,
    sa.Column("proposal_id", sa.String(100), primary_key=True),
    sa.Column("voter", sa.String(42), primary_key=True),
    sa.Column("choice", sa.String(200), nullable=False),
    sa.Column("weight", sa.Numeric(78, 0), nullable=False),
    sa.Column("vote_hash", sa.String(66), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class Database:
    """An async engine on ``url``; ``init()`` creates the tables idempotently."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.safe_url = make_url(url).render_as_string(hide_password=True)
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def init(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Append-only, tamper-evident log. Appends are serialised; a failed write raises ``AuditUnavailable``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._frontier: merkle.Frontier | None = None

    async def _load_frontier(self, conn: sa.ext.asyncio.AsyncConnection) -> merkle.Frontier:
        rows = await conn.execute(sa.select(audit_entries.c.leaf_hash).order_by(audit_entries.c.seq))
        f = merkle.Frontier()
        for (h,) in rows:
            f.append(bytes.fromhex(h))
        return f

    async def append(self, kind: str, subject: str, payload: dict[str, Any]) -> AuditReceipt:
        body = canonical_json(payload)
        async with self._lock:
            try:
                async with self._db.engine.begin() as conn:
                    if not self._db.is_sqlite:  # serialise writers across processes
                        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(6962)"))
                    size = (await conn.execute(sa.select(sa.func.count()).select_from(audit_entries))).scalar_one()
                    if self._frontier is None or self._frontier.size != size:
                        self._frontier = await self._load_frontier(conn)
                    frontier = merkle.Frontier(self._frontier.size, self._frontier.nodes)
                    leaf = merkle.leaf_hash(leaf_data(size, kind, subject, body))
                    frontier.append(leaf)
                    root = frontier.root().hex()
                    await conn.execute(audit_entries.insert().values(
                        seq=size, kind=kind, subject=subject, payload=body, leaf_hash=leaf.hex(), root_after=root,
                        created_at=_now()))
                self._frontier = frontier
            except (SQLAlchemyError, OSError) as err:
                self._frontier = None
                raise AuditUnavailable(
                    f"audit log at {self._db.safe_url} cannot be written ({type(err).__name__}: "
                    f"{str(err).splitlines()[0]}); the decision that needed it is refused"
                ) from err
        return AuditReceipt(seq=size, leaf_hash=leaf.hex(), root=root, tree_size=size + 1)

    async def _rows(self) -> Sequence[sa.Row[Any]]:
        async with self._db.engine.connect() as conn:
            return (await conn.execute(sa.select(audit_entries).order_by(audit_entries.c.seq))).all()

    async def _hashes(self, size: int | None = None) -> list[bytes]:
        async with self._db.engine.connect() as conn:
            q = sa.select(audit_entries.c.leaf_hash).order_by(audit_entries.c.seq)
            if size is not None:
                q = q.limit(size)
            return [bytes.fromhex(h) for (h,) in await conn.execute(q)]

    async def root(self, tree_size: int | None = None) -> str:
        return merkle.root_of_hashes(await self._hashes(tree_size)).hex()

    async def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        hashes = await self._hashes(tree_size)
        return InclusionProof(seq=seq, tree_size=len(hashes), leaf_hash=hashes[seq].hex(),
                              root=merkle.root_of_hashes(hashes).hex(),
                              path=[p.hex() for p in merkle.inclusion_proof(hashes, seq)])

    async def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[str]:
        return [p.hex() for p in merkle.consistency_proof(await self._hashes(new_size), old_size)]

    async def latest(self, n: int) -> list[AuditEntry]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(audit_entries).order_by(audit_entries.c.seq.desc()).limit(n))).all()
        return [AuditEntry(seq=r.seq, kind=r.kind, subject=r.subject, payload=json.loads(r.payload),
                           leaf_hash=r.leaf_hash, root_after=r.root_after, created_at=r.created_at)
                for r in reversed(rows)]

    async def verify(self, trusted_size: int | None = None, trusted_root: str | None = None) -> VerifyReport:
        """Recompute every leaf and root from the stored entries, naming each problem by entry."""
        problems: list[AuditProblem] = []
        frontier = merkle.Frontier()
        expected_seq = 0
        for r in await self._rows():
            if r.seq != expected_seq:
                problems.append(AuditProblem(seq=expected_seq, kind="removed",
                                             message=f"entries {expected_seq}..{r.seq - 1} are missing"))
                expected_seq = r.seq
            leaf = merkle.leaf_hash(leaf_data(r.seq, r.kind, r.subject, r.payload))
            if leaf.hex() != r.leaf_hash:
                problems.append(AuditProblem(seq=r.seq, kind="changed", message=(
                    "content changed after it was logged (leaf hash mismatch)"
                    if not _matches_other_position(r, r.leaf_hash)
                    else "entry moved from another position (reordered)")))
            frontier.append(bytes.fromhex(r.leaf_hash))
            if frontier.root().hex() != r.root_after:
                problems.append(AuditProblem(seq=r.seq, kind="reordered",
                                             message="the tree head recorded at this entry does not follow from "
                                                     "the entries before it (removed or reordered history)"))
            expected_seq += 1
        root = frontier.root().hex()
        if trusted_size is not None and trusted_root is not None:
            hashes = await self._hashes()
            if trusted_size > len(hashes) or merkle.root_of_hashes(hashes[:trusted_size]).hex() != trusted_root:
                problems.append(AuditProblem(seq=trusted_size, kind="inconsistent",
                                             message="the log is not an extension of the trusted tree head"))
        return VerifyReport(ok=not problems, tree_size=frontier.size, root=root, problems=problems)


def _matches_other_position(row: sa.Row[Any], stored_leaf: str) -> bool:
    """True if the entry's content hashes to its stored leaf at some nearby other position (it was moved)."""
    for delta in (-2, -1, 1, 2):
        seq = row.seq + delta
        if seq >= 0 and merkle.leaf_hash(leaf_data(seq, row.kind, row.subject, row.payload)).hex() == stored_leaf:
            return True
    return False


class RecordedVote(BaseModel):
    previous_choice: str | None = None
    previous_weight: int | None = None
    replaced: bool = False


class VoteStore:
    """Every accepted vote, one row per (proposal, voter)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_vote(self, *, proposal_id: str, voter: str, choice: str, weight: int, vote_hash: str,
                          signature: str, payload: dict[str, Any], allow_change: bool) -> RecordedVote:
        row = {"proposal_id": proposal_id, "voter": voter.lower(), "choice": choice, "weight": weight,
               "vote_hash": vote_hash, "signature": signature, "payload": canonical_json(payload),
               "created_at": _now()}
        key = (votes.c.proposal_id == proposal_id) & (votes.c.voter == voter.lower())
        async with self._db.engine.begin() as conn:
            existing = (await conn.execute(sa.select(votes.c.choice, votes.c.weight, votes.c.vote_hash)
                                           .where(key))).first()
            if existing is None:
                try:
                    await conn.execute(votes.insert().values(**row))
                except IntegrityError:  # a concurrent insert of the same voter won
                    existing = (await conn.execute(sa.select(votes.c.choice, votes.c.weight, votes.c.vote_hash)
                                                   .where(key))).first()
                else:
                    return RecordedVote()
            assert existing is not None
            if existing.vote_hash == vote_hash:  # the same vote again (an activity retry): idempotent
                return RecordedVote()
            if not allow_change:
                raise VoteRejected(f"{voter.lower()} already voted {existing.choice!r} on {proposal_id}",
                                   type=VOTE_ALREADY_CAST)
            await conn.execute(votes.update().where(key).values(**row))
            return RecordedVote(previous_choice=existing.choice, previous_weight=int(existing.weight), replaced=True)

    async def count(self, proposal_id: str) -> int:
        async with self._db.engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(votes).where(votes.c.proposal_id == proposal_id)
            return int((await conn.execute(q)).scalar_one())

    async def vote_hashes(self, proposal_id: str) -> list[str]:
        async with self._db.engine.connect() as conn:
            q = sa.select(votes.c.vote_hash).where(votes.c.proposal_id == proposal_id).order_by(votes.c.voter)
            return [h for (h,) in await conn.execute(q)]
