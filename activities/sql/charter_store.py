"""The charter's rights store: accepted consent messages, delivered export bundles and decided cases (the one
writer of ``charter_consents``, ``charter_exports`` and ``charter_cases``).

For an export it also *reads* what other stores hold about a subject (their ballots in ``votes``, the audit
entries naming them): read-only selects, never a write to another store's table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from activities.sql.database import Database
from activities.sql.schema import audit_entries, charter_cases, charter_consents, charter_exports, votes
from westworld.charter_consent import ConsentRequest
from westworld.charter_data import SubjectConsents
from westworld.errors import CONSENT_REPLAYED, ConsentRejected


@dataclass(frozen=True)
class ConsentRow:
    subject: str
    nonce: int
    metric: str
    granted: bool
    consent_hash: str
    at: datetime


class CharterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- consents --------------------------------------------------------------------------------------
    async def record_consent(self, req: ConsentRequest, consent_hash: str, workflow_id: str, now: datetime) -> bool:
        """Store an accepted message; False if this very message is already stored (a retried activity);
        ConsentRejected (ConsentReplayed) if its nonce is not above every nonce its subject used."""
        subject = req.subject.lower()
        async with self._db.engine.begin() as conn:
            rows = (await conn.execute(sa.select(charter_consents.c.nonce, charter_consents.c.consent_hash)
                                       .where(charter_consents.c.subject == subject))).all()
            if any(r.consent_hash == consent_hash for r in rows):
                return False
            last = max((int(r.nonce) for r in rows), default=-1)
            if req.nonce <= last:
                raise ConsentRejected(f"consent nonce {req.nonce} of {subject} is not above {last}, the last one "
                                      "used: a signed message counts once", type=CONSENT_REPLAYED)
            await conn.execute(sa.insert(charter_consents).values(
                subject=subject, nonce=str(req.nonce), metric=req.metric, granted=req.grant,
                consent_hash=consent_hash, workflow_id=workflow_id, at=now))
        return True

    async def consents_of(self, subject: str) -> list[ConsentRow]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(charter_consents).where(
                charter_consents.c.subject == subject.lower()))).all()
        out = [ConsentRow(r.subject, int(r.nonce), r.metric, r.granted, r.consent_hash, r.at) for r in rows]
        return sorted(out, key=lambda r: r.nonce)

    async def subject_consents(self, subject: str) -> SubjectConsents:
        latest: dict[str, bool] = {}
        rows = await self.consents_of(subject)
        for r in rows:
            latest[r.metric] = r.granted
        return SubjectConsents(granted=sorted(m for m, g in latest.items() if g),
                               last_nonce=rows[-1].nonce if rows else -1)

    async def consents_in_force(self) -> list[tuple[str, str]]:
        """(subject, metric) of every consent whose latest message grants it."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(charter_consents))).all()
        latest: dict[tuple[str, str], tuple[int, bool]] = {}
        for r in rows:
            key = (r.subject, r.metric)
            if key not in latest or int(r.nonce) > latest[key][0]:
                latest[key] = (int(r.nonce), r.granted)
        return sorted(k for k, (_, granted) in latest.items() if granted)

    async def purge_consents(self, metric: str, before: datetime) -> int:
        """Delete ``metric``'s consent messages older than ``before`` that a later message of the same subject
        superseded (the message in force is kept: it is what the gate acts on)."""
        async with self._db.engine.begin() as conn:
            rows = (await conn.execute(sa.select(charter_consents).where(charter_consents.c.metric == metric))).all()
            newest: dict[str, int] = {}
            for r in rows:
                newest[r.subject] = max(newest.get(r.subject, -1), int(r.nonce))
            old = (await conn.execute(sa.select(charter_consents.c.subject, charter_consents.c.nonce).where(
                charter_consents.c.metric == metric, charter_consents.c.at < before))).all()  # SQL compares times
            doomed = [(r.subject, r.nonce) for r in old if int(r.nonce) < newest[r.subject]]
            for subject, nonce in doomed:
                await conn.execute(sa.delete(charter_consents).where(
                    charter_consents.c.subject == subject, charter_consents.c.nonce == nonce))
        return len(doomed)

    # -- exports ---------------------------------------------------------------------------------------
    async def record_export(self, export_id: str, subject: str, sha256: str, cid: str, file: str,
                            now: datetime) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.delete(charter_exports).where(charter_exports.c.export_id == export_id))
            await conn.execute(sa.insert(charter_exports).values(
                export_id=export_id, subject=subject.lower(), sha256=sha256, cid=cid, file=file, delivered_at=now))

    async def exports_of(self, subject: str) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(charter_exports).where(
                charter_exports.c.subject == subject.lower()))).all()
        return [dict(r._mapping) for r in rows]

    async def expired_exports(self, before: datetime) -> list[tuple[str, str, str]]:
        """(export id, file, cid) of bundles delivered before ``before``."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(charter_exports.c.export_id, charter_exports.c.file,
                                                 charter_exports.c.cid).where(
                charter_exports.c.delivered_at < before))).all()
        return [(r.export_id, r.file, r.cid) for r in rows]

    async def delete_exports(self, export_ids: list[str]) -> int:
        if not export_ids:
            return 0
        async with self._db.engine.begin() as conn:
            return int((await conn.execute(sa.delete(charter_exports).where(
                charter_exports.c.export_id.in_(export_ids)))).rowcount)

    # -- cases -----------------------------------------------------------------------------------------
    async def record_case(self, case_id: str, source: str, outcome: str, summary: str, decided_by: list[str],
                          opened_at: datetime, now: datetime) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.delete(charter_cases).where(charter_cases.c.case_id == case_id))
            await conn.execute(sa.insert(charter_cases).values(
                case_id=case_id, source=source, outcome=outcome, summary=summary,
                decided_by=json.dumps(decided_by), opened_at=opened_at, closed_at=now))

    # -- what other stores hold about a subject (read only) --------------------------------------------
    async def votes_of(self, voter: str) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(
                votes.c.proposal_id, votes.c.choice, votes.c.weight, votes.c.vote_hash, votes.c.created_at)
                .where(votes.c.voter == voter.lower()))).all()
        return [dict(r._mapping) for r in rows]

    async def audit_entries_naming(self, subject: str) -> list[dict[str, Any]]:
        """Audit entries whose subject or payload names the address (any letter case)."""
        needle = subject.lower()
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(
                audit_entries.c.seq, audit_entries.c.kind, audit_entries.c.subject, audit_entries.c.payload,
                audit_entries.c.created_at).where(sa.or_(
                    sa.func.lower(audit_entries.c.subject).contains(needle),
                    sa.func.lower(audit_entries.c.payload).contains(needle))))).all()
        return [dict(r._mapping) for r in rows]
