"""The registered operators and the nonces of applied admin changes (the one writer of ``cap_operators`` and
``cap_admin_nonces``). The other capability tables belong to :mod:`activities.sql.capability_store`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from activities.sql.database import Database
from activities.sql.schema import cap_admin_nonces as nonces
from activities.sql.schema import cap_operators as operators


@dataclass(frozen=True)
class NonceUse:
    """The first use of a signed change's nonce: the run that made it, when, and the outcome stored (if any)."""

    run_id: str | None
    at: datetime
    outcome: str | None


class AdminStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def operators(self) -> dict[str, str]:
        """Operator id -> public key (hex)."""
        async with self._db.engine.connect() as conn:
            return {r.operator_id: r.public_key for r in await conn.execute(sa.select(operators))}

    async def add_operator(self, operator_id: str, public_key: str, now: datetime) -> None:
        """Register (or replace the key of) an operator."""
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.delete(operators).where(operators.c.operator_id == operator_id))
            await conn.execute(sa.insert(operators).values(operator_id=operator_id, public_key=public_key,
                                                           added_at=now))

    async def remove_operator(self, operator_id: str) -> bool:
        async with self._db.engine.begin() as conn:
            return bool((await conn.execute(sa.delete(operators).where(operators.c.operator_id == operator_id)))
                        .rowcount)

    async def use_nonce(self, nonce: str, run_id: str | None, now: datetime) -> NonceUse | None:
        """Record ``nonce`` as used by ``run_id``; None if this is its first use, else how it was used first."""
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(sa.select(nonces).where(nonces.c.nonce == nonce))).first()
            if row is None:
                await conn.execute(sa.insert(nonces).values(nonce=nonce, run_id=run_id, at=now))
                return None
        return NonceUse(run_id=row.run_id, at=row.at, outcome=row.outcome)

    async def save_outcome(self, nonce: str, outcome_json: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.update(nonces).where(nonces.c.nonce == nonce).values(outcome=outcome_json))
