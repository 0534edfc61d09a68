"""Administrative changes to the capability state, made by the worker (which holds the root keys) once the
workflow has checked who signed them: registries (nodes, peers, guardians, operators), minting, revoking, root
keys; the signer registries the workflows check against; and what anyone may read (public keys, the halt).

Each signed change is applied at most once: its nonce (the admin workflow's id) is recorded with the run that
used it, so a retried activity answers as the first attempt did and a replayed signature is refused.
The operator key `westworld up` creates (``<data dir>/operator.pub``) is always a registered operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from nacl.public import PublicKey, SealedBox
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import capability_store as cs
from activities.capability_store import CapabilityStore
from activities.store import Database
from westworld.agents import AdminAction, AdminApply, AdminChange, AdminOutcome, CapabilityRegistries
from westworld.authority import AdminSigners
from westworld.errors import UNAUTHORISED, InvalidInput, WestworldError

md = sa.MetaData()
operators = sa.Table("cap_operators", md, sa.Column("operator_id", sa.String(128), primary_key=True),
                     sa.Column("public_key", sa.String(64), nullable=False),
                     sa.Column("added_at", sa.DateTime(timezone=True), nullable=False))
nonces = sa.Table("cap_admin_nonces", md, sa.Column("nonce", sa.String(300), primary_key=True),
                  sa.Column("run_id", sa.String(64), nullable=False), sa.Column("outcome", sa.Text),
                  sa.Column("at", sa.DateTime(timezone=True), nullable=False))
GENESIS_OPERATOR = "operator"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def read_public_key(path: Path) -> str | None:
    try:
        text = path.read_text().strip().lower()
    except FileNotFoundError:
        return None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(f"{path}: not a hex Ed25519 public key")
    return text


class CapabilityAdminActivities:
    def __init__(self, store: CapabilityStore, db: Database, genesis_operator_file: Path,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._store, self._db, self._genesis, self._clock = store, db, genesis_operator_file, clock

    async def init(self) -> None:
        async with self._db.engine.begin() as conn:
            await conn.run_sync(md.create_all)

    async def operators(self) -> dict[str, str]:
        async with self._db.engine.connect() as conn:
            found = {r.operator_id: r.public_key for r in await conn.execute(sa.select(operators))}
        if (genesis := read_public_key(self._genesis)) is not None:
            found.setdefault(GENESIS_OPERATOR, genesis)
        return found

    @activity.defn(name="admin_signers")
    async def admin_signers(self) -> AdminSigners:
        return AdminSigners(operators=await self.operators(), guardians=await self._store.guardians())

    @activity.defn(name="capability_registries")
    async def registries(self) -> CapabilityRegistries:
        async with self._db.engine.connect() as conn:
            active = await conn.scalar(sa.select(cs.root_keys.c.key_id).where(cs.root_keys.c.active)) or ""
            epoch = int(await conn.scalar(sa.select(cs.counters.c.value).where(
                cs.counters.c.name == cs.REVOCATION_EPOCH)) or 0)
        return CapabilityRegistries(nodes=await self._store.node_regions(), peers=await self._store.peers(),
                                    guardians=await self._store.guardians(), operators=await self.operators(),
                                    halt=await self._store.halt_state(), active_key=active, revocation_epoch=epoch)

    @activity.defn(name="apply_admin_change")
    async def apply(self, inp: AdminApply) -> AdminOutcome:
        """Apply a change the workflow authorised, once per nonce (a retry of the same run gets the outcome)."""
        run_id = activity.info().workflow_run_id
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(sa.select(nonces).where(nonces.c.nonce == inp.nonce))).first()
            if row is None:
                await conn.execute(sa.insert(nonces).values(nonce=inp.nonce, run_id=run_id, at=self._clock()))
            elif row.run_id != run_id:
                raise ApplicationError(f"{inp.nonce}: this signed change was already applied (at "
                                       f"{row.at}); a signature counts once", type=UNAUTHORISED, non_retryable=True)
            elif row.outcome and inp.change.action is not AdminAction.MINT:  # a mint is re-made (same token id)
                return AdminOutcome.model_validate_json(row.outcome)
        try:
            outcome = await self._apply(inp.change, inp.nonce)
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err
        stored = outcome.model_copy(update={"sealed_token": ""})  # re-minted on a retry, never stored
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.update(nonces).where(nonces.c.nonce == inp.nonce).values(
                outcome=stored.model_dump_json()))
        return outcome

    async def _apply(self, c: AdminChange, nonce: str) -> AdminOutcome:
        now, store, a = self._clock(), self._store, c.action
        if a is AdminAction.ADD_NODES:
            added = await store.add_nodes_if_absent(c.node_ids, c.region, now)
            return AdminOutcome(detail=f"registered {len(added)} nodes ({len(c.node_ids) - len(added)} known)")
        if a is AdminAction.REMOVE_NODES:  # fewer live nodes only makes every action's share wider: stricter
            removed = await store.deregister_nodes(c.node_ids)
            kept = len(c.node_ids) - len(removed)
            return AdminOutcome(detail=f"deregistered {len(removed)} nodes ({kept} unknown or peers)")
        if a is AdminAction.ADD_PEER:
            await store.add_node(c.subject, c.region, _needs_key(c), now)
            return AdminOutcome(detail=f"registered peer {c.subject}")
        if a is AdminAction.ADD_GUARDIAN:
            await store.add_guardian(c.subject, _needs_key(c), now)
            return AdminOutcome(detail=f"registered guardian {c.subject}")
        if a is AdminAction.ADD_OPERATOR:
            key = _needs_key(c)
            async with self._db.engine.begin() as conn:
                await conn.execute(sa.delete(operators).where(operators.c.operator_id == c.subject))
                await conn.execute(sa.insert(operators).values(operator_id=c.subject, public_key=key, added_at=now))
            return AdminOutcome(detail=f"registered operator {c.subject}")
        if a in {AdminAction.REMOVE_NODE, AdminAction.REMOVE_GUARDIAN, AdminAction.REMOVE_OPERATOR}:
            table, column = {AdminAction.REMOVE_NODE: (cs.nodes, cs.nodes.c.node_id),
                             AdminAction.REMOVE_GUARDIAN: (cs.guardians, cs.guardians.c.guardian_id),
                             AdminAction.REMOVE_OPERATOR: (operators, operators.c.operator_id)}[a]
            async with self._db.engine.begin() as conn:
                gone = (await conn.execute(sa.delete(table).where(column == c.subject))).rowcount
            if not gone:
                raise InvalidInput(f"{a.value}: {c.subject!r} is not registered")
            return AdminOutcome(detail=f"removed {c.subject}")
        if a is AdminAction.MINT:
            if not c.recipient_key:
                raise InvalidInput(f"mint {c.subject}: needs the recipient_key the token is sealed to")
            token = await store.mint(c.subject, c.actions, token_id=_token_id(nonce))
            sealed = SealedBox(PublicKey(bytes.fromhex(c.recipient_key))).encrypt(token.encode())
            return AdminOutcome(detail=f"minted token {_token_id(nonce)} for {c.subject}", sealed_token=sealed.hex())
        if a is AdminAction.REVOKE_TOKEN:
            await store.revoke_token(c.subject, c.reason or "revoked by operator", now)
            return AdminOutcome(detail=f"revoked token {c.subject}")
        if a is AdminAction.REVOKE_ALL:
            epoch = await store.bump_revocation_epoch()
            return AdminOutcome(detail=f"revocation epoch is now {epoch}: every older token is revoked")
        if a is AdminAction.ROTATE_KEY:
            return AdminOutcome(detail=f"active root key: {await store.rotate_key(now)}")
        if a is AdminAction.RETIRE_KEY:
            if not await store.retire_key(c.subject):
                raise InvalidInput(f"retire_key: no root key {c.subject!r}")
            return AdminOutcome(detail=f"retired {c.subject}")
        if a is AdminAction.HALT:
            epoch = await store.allocate_halt(nonce, c.reason or "halted by operator")
            return AdminOutcome(detail=f"halt epoch {epoch}", halt_epoch=epoch)
        raise InvalidInput(f"unknown admin action {a!r}")  # pragma: no cover (the enum is exhaustive)

    def all(self) -> list[Callable[..., object]]:
        return [self.admin_signers, self.registries, self.apply]


def _needs_key(c: AdminChange) -> str:
    if not c.public_key:
        raise InvalidInput(f"{c.action.value} {c.subject}: needs the public key")
    if not c.subject:
        raise InvalidInput(f"{c.action.value}: needs the id to register")
    return c.public_key


def _token_id(nonce: str) -> str:
    """The minted token's id, derived from the nonce: a retried mint makes the same token."""
    return hashlib.sha256(nonce.encode()).hexdigest()[:16]

