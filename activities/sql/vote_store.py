"""The vote store: accepted ballots, one counted per (proposal, voter), and each proposal's tally and opening
(the one writer of tables ``votes``, ``vote_ballots`` and ``vote_proposals``).

Counting happens here, not in the workflow: a batch of ballots and the proposal's tally are written in ONE
transaction, and the tally after the batch is what the workflow shows and decides on. So a ballot sent twice
(a retried update, a resend across continue-as-new, a replayed local activity) answers with its first receipt
and adds nothing; a changed vote replaces the voter's ballot, never adds to it; and the tally always equals a
recount of the stored ballots (:meth:`VoteStore.recount`).

A proposal belongs to the vote execution chain that claimed it first (its first run id): only that chain may
record ballots for it, and its continued runs read the opening (snapshot, deadline, rules in force) back from
here rather than from their input, which any caller could forge.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.database import Database
from activities.sql.schema import vote_ballots as ballots
from activities.sql.schema import vote_proposals as proposals
from activities.sql.schema import votes
from westworld.audit import canonical_json
from westworld.errors import (
    INJECTED_STATE,
    PROPOSAL_ALREADY_OPENED,
    VOTE_ALREADY_CAST,
    VOTE_CLOSED,
    InvalidInput,
    PermanentError,
    VoteRejected,
)
from westworld.tally import empty_tally, recount
from westworld.vote import (
    ClaimProposalInput,
    IntakeProposal,
    LoadedVote,
    LoadOpeningInput,
    RecordVoteResult,
    VoteCount,
    VoteOpening,
)

ADDRESS = re.compile(r"0x[0-9a-f]{40}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Ballot(BaseModel):
    """A verified, weighed ballot to record."""

    voter: str
    choice: str
    weight: int
    vote_hash: str
    signature: str
    payload: dict[str, Any]
    allow_change: bool = False


class StoredVote(BaseModel):
    proposal_id: str
    voter: str
    choice: str
    weight: int
    vote_hash: str
    signature: str
    payload: dict[str, Any]
    created_at: datetime


def _tally_json(tally: dict[str, int]) -> str:
    return json.dumps({k: str(v) for k, v in tally.items()})


def _count(row: Any) -> VoteCount:
    return VoteCount(tally={k: int(v) for k, v in json.loads(row.tally).items()}, votes=row.votes,
                     rejected=row.rejected)


def _receipt(choice: str, weight: str, previous_choice: str | None, previous_weight: str | None,
             repeat: bool) -> RecordVoteResult:
    return RecordVoteResult(weight=int(weight), choice=choice, previous_choice=previous_choice,
                            previous_weight=None if previous_weight is None else int(previous_weight), repeat=repeat)


def _owner_checked(row: Any, proposal_id: str, first_run_id: str) -> Any:
    if row is None:
        raise PermanentError(f"proposal {proposal_id} was never opened by a vote (no claim in the store)",
                             type=INJECTED_STATE)
    if row.first_run_id != first_run_id:
        raise PermanentError(f"proposal {proposal_id} belongs to the vote {row.workflow_id} (first run "
                             f"{row.first_run_id}), not to run chain {first_run_id}",
                             type=PROPOSAL_ALREADY_OPENED)
    return row


class VoteStore:
    """Ballots, tallies and openings in the project database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _owned(self, conn: AsyncConnection, proposal_id: str, first_run_id: str) -> Any:
        row = (await conn.execute(sa.select(proposals).where(proposals.c.proposal_id == proposal_id)
                                  .with_for_update())).first()
        return _owner_checked(row, proposal_id, first_run_id)

    async def intake_proposal(self, proposal_id: str) -> IntakeProposal | None:
        """What the vote intake serves a proposal with: its owner, its opening and whether it is closed (None
        while nothing opened it)."""
        query = sa.select(proposals.c.workflow_id, proposals.c.opening, proposals.c.closed_at).where(
            proposals.c.proposal_id == proposal_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.opening is None:
            return None
        return IntakeProposal(workflow_id=row.workflow_id, opening=VoteOpening.model_validate_json(row.opening),
                              closed=row.closed_at is not None)

    async def open_workflows(self) -> list[str]:
        """The workflow ids of the votes that are open (opened, not closed)."""
        query = sa.select(proposals.c.workflow_id).where(proposals.c.opening.is_not(None)
                                                         & proposals.c.closed_at.is_(None))
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def read_count(self, inp: LoadOpeningInput) -> VoteCount:
        """The owning chain's view of its tally (a read: it waits for no ballot transaction)."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(proposals).where(
                proposals.c.proposal_id == inp.proposal_id))).first()
        return _count(_owner_checked(row, inp.proposal_id, inp.first_run_id))

    async def close(self, inp: LoadOpeningInput) -> VoteCount:
        """Close the proposal for ballots (idempotent) and return its final tally, in one transaction: every
        ballot transaction either committed before (and is counted) or is refused ``VOTE_CLOSED`` after."""
        async with self._db.engine.begin() as conn:
            row = await self._owned(conn, inp.proposal_id, inp.first_run_id)
            if row.closed_at is None:
                await conn.execute(sa.update(proposals).where(proposals.c.proposal_id == inp.proposal_id)
                                   .values(closed_at=_utcnow()))
        return _count(row)


    async def claim(self, inp: ClaimProposalInput) -> None:
        """Take ``proposal_id`` for the execution chain ``first_run_id`` (idempotent for that chain).

        Raises:
            PermanentError: (``PROPOSAL_ALREADY_OPENED``) another execution opened it, or ballots exist for it.
        """
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(sa.select(proposals).where(proposals.c.proposal_id == inp.proposal_id)
                                      .with_for_update())).first()
            if row is None:
                if (await conn.execute(sa.select(votes.c.voter).where(votes.c.proposal_id == inp.proposal_id)
                                       .limit(1))).first() is not None:
                    raise PermanentError(f"proposal {inp.proposal_id} already has recorded votes: it was opened "
                                         f"before and cannot be opened again", type=PROPOSAL_ALREADY_OPENED)
                await conn.execute(sa.insert(proposals).values(
                    proposal_id=inp.proposal_id, first_run_id=inp.first_run_id, workflow_id=inp.workflow_id,
                    tally=_tally_json(empty_tally(inp.choices)), votes=0, rejected=0, created_at=_utcnow()))
                return
        if row.first_run_id != inp.first_run_id:
            raise PermanentError(f"proposal {inp.proposal_id} was opened already by the vote {row.workflow_id} "
                                 f"(first run {row.first_run_id}); a new start cannot reopen it",
                                 type=PROPOSAL_ALREADY_OPENED)

    async def save_opening(self, opening: VoteOpening) -> VoteOpening:
        """Store the opening once; a second save (a retry) returns what was stored first."""
        async with self._db.engine.begin() as conn:
            row = await self._owned(conn, opening.proposal_id, opening.first_run_id)
            if row.opening is not None:
                return VoteOpening.model_validate_json(row.opening)
            await conn.execute(sa.update(proposals).where(proposals.c.proposal_id == opening.proposal_id)
                               .values(opening=opening.model_dump_json()))
        return opening

    async def load(self, inp: LoadOpeningInput) -> LoadedVote:
        """A continued run's state: the stored opening and the tally.

        Raises:
            PermanentError: (``INJECTED_STATE``) nothing was opened for this chain; (``PROPOSAL_ALREADY_OPENED``)
                another chain owns the proposal.
        """
        async with self._db.engine.begin() as conn:
            row = await self._owned(conn, inp.proposal_id, inp.first_run_id)
        if row.opening is None:
            raise PermanentError(f"proposal {inp.proposal_id}: a continued run found no stored opening; only the "
                                 f"first run of a vote opens it", type=INJECTED_STATE)
        return LoadedVote(opening=VoteOpening.model_validate_json(row.opening), count=_count(row))

    async def record_ballots(self, proposal_id: str, first_run_id: str | None, batch: list[Ballot],
                             refused: int = 0) -> tuple[list[RecordVoteResult], VoteCount | None]:
        """Record a batch for the proposal's owning chain and return each ballot's receipt and the new tally.

        A ballot whose hash was accepted before answers with its first receipt (``repeat``) and counts nothing;
        another ballot from a voter who already voted replaces it if ``allow_change``, else is refused
        (``VOTE_ALREADY_CAST``). ``refused`` counts ballots refused before reaching the store (shown in status).
        ``first_run_id`` None: a run from before the store kept tallies (no ownership, no tally; None returned).

        Raises:
            InvalidInput: a voter that is not an address, a negative weight, a choice the proposal does not have.
            PermanentError: (``PROPOSAL_ALREADY_OPENED``/``INJECTED_STATE``) the caller does not own the proposal.
        """
        for b in batch:
            if not ADDRESS.fullmatch(b.voter.lower()) or b.weight < 0:
                raise InvalidInput(f"vote on {proposal_id}: voter {b.voter!r} must be a 0x address and weight >= 0")
        outcomes: list[RecordVoteResult] = []
        async with self._db.engine.begin() as conn:
            if first_run_id is None:
                return await _record_batch(conn, proposal_id, batch, None), None
            owned = await self._owned(conn, proposal_id, first_run_id)
            if owned.closed_at is not None:
                raise VoteRejected(f"voting on {proposal_id} is closed: its final count was taken", type=VOTE_CLOSED)
            count = _count(owned)
            tally, n = count.tally, count.votes
            for outcome in await _record_batch(conn, proposal_id, batch, tally):
                if outcome.error_type is None and not outcome.repeat and outcome.previous_choice is None:
                    n += 1
                refused += outcome.error_type is not None
                outcomes.append(outcome)
            after = VoteCount(tally=tally, votes=n, rejected=count.rejected + refused)
            await conn.execute(sa.update(proposals).where(proposals.c.proposal_id == proposal_id).values(
                tally=_tally_json(tally), votes=n, rejected=after.rejected))
        return outcomes, after

    async def known_hashes(self, proposal_id: str, hashes: list[str]) -> set[str]:
        """Which of ``hashes`` were accepted for the proposal before (a resend needs no weighing again)."""
        query = sa.select(ballots.c.vote_hash).where(
            (ballots.c.proposal_id == proposal_id) & ballots.c.vote_hash.in_(hashes))
        async with self._db.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def tally(self, proposal_id: str) -> VoteCount | None:
        """The stored tally (None if the proposal was never claimed)."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(proposals).where(proposals.c.proposal_id == proposal_id))).first()
        return None if row is None else _count(row)

    async def recount(self, proposal_id: str, choices: list[str]) -> dict[str, int]:
        """The tally recomputed from the voters' current ballots."""
        query = sa.select(votes.c.choice, votes.c.weight).where(votes.c.proposal_id == proposal_id)
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return recount(choices, ((r.choice, int(r.weight)) for r in rows))

    async def count(self, proposal_id: str) -> int:
        async with self._db.engine.connect() as conn:
            n = await conn.scalar(sa.select(sa.func.count()).where(votes.c.proposal_id == proposal_id))
        return int(n or 0)

    async def vote_hashes(self, proposal_id: str) -> list[str]:
        """The current ballots' hashes, ordered by voter address."""
        query = sa.select(votes.c.vote_hash).where(votes.c.proposal_id == proposal_id).order_by(votes.c.voter)
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def list_votes(self, proposal_id: str, limit: int = 100, offset: int = 0) -> list[StoredVote]:
        """A page of the proposal's current ballots, ordered by voter address."""
        query = (sa.select(votes).where(votes.c.proposal_id == proposal_id).order_by(votes.c.voter)
                 .limit(limit).offset(offset))
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [
            StoredVote(proposal_id=r.proposal_id, voter=r.voter, choice=r.choice, weight=int(r.weight),
                       vote_hash=r.vote_hash, signature=r.signature, payload=json.loads(r.payload),
                       created_at=r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC))
            for r in rows
        ]


IN_CHUNK = 500  # keys per IN (...) list


async def _rows_by(conn: AsyncConnection, table: sa.Table, proposal_id: str, column: str,
                   keys: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    col = table.c[column]
    for i in range(0, len(keys), IN_CHUNK):
        rows = await conn.execute(sa.select(table).where((table.c.proposal_id == proposal_id)
                                                         & col.in_(keys[i:i + IN_CHUNK])))
        found.update({r._mapping[column]: dict(r._mapping) for r in rows})
    return found


async def _record_batch(conn: AsyncConnection, proposal_id: str, batch: list[Ballot],
                        tally: dict[str, int] | None) -> list[RecordVoteResult]:
    """Each ballot's receipt, in order, as if recorded one after another; read and written in a few statements.

    In order, for each ballot: its hash accepted before -> its first receipt (``repeat``); the voter's current
    ballot has that hash (recorded before the ballots table existed) -> the same; a choice the proposal lacks ->
    ``InvalidInput`` (nothing of the batch is written); a voter with no ballot -> recorded; a voter with one ->
    refused ``VOTE_ALREADY_CAST`` unless ``allow_change``, then it replaces it (the tally moves its weight)."""
    now = _utcnow()
    seen = await _rows_by(conn, ballots, proposal_id, "vote_hash", list({b.vote_hash for b in batch}))
    current = await _rows_by(conn, votes, proposal_id, "voter", list({b.voter.lower() for b in batch}))
    new_votes: dict[str, dict[str, Any]] = {}  # voter -> row to insert (a voter without a ballot before)
    changed: dict[str, dict[str, Any]] = {}  # voter -> row replacing the stored one
    new_ballots: list[dict[str, Any]] = []
    outcomes: list[RecordVoteResult] = []
    for b in batch:
        voter = b.voter.lower()
        if (first := seen.get(b.vote_hash)) is not None:
            outcomes.append(_receipt(first["choice"], first["weight"], first["previous_choice"],
                                     first["previous_weight"], repeat=True))
            continue
        cur = current.get(voter)
        if cur is not None and cur["vote_hash"] == b.vote_hash:  # recorded before the ballots table existed
            outcomes.append(_receipt(cur["choice"], cur["weight"], cur["previous_choice"], cur["previous_weight"],
                                     repeat=True))
            continue
        if tally is not None and b.choice not in tally:
            raise InvalidInput(f"vote on {proposal_id}: choice {b.choice!r} is not one of {list(tally)}")
        row: dict[str, Any] = {
            "proposal_id": proposal_id, "voter": voter, "choice": b.choice, "weight": str(b.weight),
            "vote_hash": b.vote_hash, "signature": b.signature, "payload": canonical_json(b.payload),
            "previous_choice": None, "previous_weight": None, "created_at": now}
        previous: tuple[str, str] | None = None
        if cur is None:
            new_votes[voter] = row
        elif not b.allow_change:
            outcomes.append(RecordVoteResult(weight=0, error_type=VOTE_ALREADY_CAST, error=(
                f"{voter} already voted {cur['choice']!r} on proposal {proposal_id}; this proposal does not "
                f"allow changing a vote")))
            continue
        else:
            previous = (cur["choice"], cur["weight"])
            row.update(previous_choice=cur["choice"], previous_weight=cur["weight"])
            (new_votes if voter in new_votes else changed)[voter] = row
            if tally is not None:
                tally[cur["choice"]] -= int(cur["weight"])
        current[voter] = row
        if tally is not None:
            tally[b.choice] += b.weight
        receipt: dict[str, Any] = {
            "proposal_id": proposal_id, "vote_hash": b.vote_hash, "voter": voter, "choice": b.choice,
            "weight": str(b.weight), "previous_choice": previous[0] if previous else None,
            "previous_weight": previous[1] if previous else None, "created_at": now}
        seen[b.vote_hash] = receipt
        new_ballots.append(receipt)
        outcomes.append(_receipt(b.choice, str(b.weight), receipt["previous_choice"], receipt["previous_weight"],
                                 repeat=False))
    if new_votes:
        await conn.execute(sa.insert(votes), list(new_votes.values()))
    if changed:
        key = (votes.c.proposal_id == sa.bindparam("k_proposal")) & (votes.c.voter == sa.bindparam("k_voter"))
        await conn.execute(
            sa.update(votes).where(key).values({c: sa.bindparam(f"v_{c}") for c in CHANGED_COLUMNS}),
            [{"k_proposal": proposal_id, "k_voter": v, **{f"v_{c}": r[c] for c in CHANGED_COLUMNS}}
             for v, r in changed.items()])
    if new_ballots:
        await conn.execute(sa.insert(ballots), new_ballots)
    return outcomes


CHANGED_COLUMNS = ("choice", "weight", "vote_hash", "signature", "payload", "previous_choice", "previous_weight",
                   "created_at")
