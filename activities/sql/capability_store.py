"""Capability state in the project database: encrypted root keys, revocations, the node (peer) and guardian
registries, the usage ledger behind the cumulative budget, every decision, and halt epochs.

Root keys are stored AES-GCM encrypted under a key-encryption key kept in a file in the data dir (key id as
associated data); they are decrypted only inside this process. :meth:`CapabilityStore.check` reads the state,
decides, records the decision and reserves the nodes it touches in ONE transaction (``BEGIN IMMEDIATE`` on
SQLite, a per-agent advisory lock on PostgreSQL), so concurrent small actions cannot race past a budget. On a
SQLite file the check takes the group-committing path of :mod:`.capability_check` (its caches follow the
generation counters that migration 0004's triggers keep); elsewhere it reads the state afresh every check. A
decrypted root key is reused only while its stored row is unchanged: retired or replaced in any process, it
is gone for the next check.

The one writer of the ``cap_*`` tables except ``cap_operators`` and ``cap_admin_nonces`` (:mod:`.admin_store`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.public import PrivateKey
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.sql.capability_check import UNREGISTERED, SqliteCheck, decide, parse
from activities.sql.database import Database
from activities.sql.schema import cap_counters as counters
from activities.sql.schema import cap_decisions as decisions
from activities.sql.schema import cap_events as events
from activities.sql.schema import cap_guardians as guardians
from activities.sql.schema import cap_halts as halts
from activities.sql.schema import cap_nodes as nodes
from activities.sql.schema import cap_revoked as revoked
from activities.sql.schema import cap_root_keys as root_keys
from activities.sql.schema import cap_seal_keys as seal_keys
from activities.sql.schema import cap_sealed_claims as sealed_claims
from activities.sql.schema import cap_usage as usage
from westworld import capability as cap
from westworld import caveats as cv
from westworld.agents import CapabilityCheckInput, CapabilityCheckOutcome, HaltState
from westworld.anomaly import AgentEvent
from westworld.errors import InvalidInput

REVOCATION_EPOCH = "revocation_epoch"
SEAL_KEY_ID = "seal-1"
__all__ = ["UNREGISTERED", "CapabilityStore", "load_or_create_kek"]


def load_or_create_kek(path: Path) -> bytes:
    """The key-encryption key for root keys (32 random bytes, hex, file mode 0600), created on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != 32:
        raise InvalidInput(f"{path}: the capability key-encryption key must be 32 bytes of hex")
    return key


def _utc(at: datetime | None) -> datetime | None:
    return None if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC))


class CapabilityStore:
    def __init__(self, db: Database, kek: bytes) -> None:
        self._db = db
        self._aead = AESGCM(kek)
        self._keys: dict[str, bytes] = {}  # key id -> the key, decrypted from the row in self._sealed
        self._sealed: dict[str, str] = {}
        path = db.url.database if db.dialect == "sqlite" else None
        self._fast = SqliteCheck(path, self._unseal) if path and not path.startswith(("file:", ":memory:")) \
            else None

    def close(self) -> None:
        """Close the SQLite check path's connection (the database itself is the caller's)."""
        if self._fast is not None:
            self._fast.close()

    # --- root keys -----------------------------------------------------------------------------------------
    async def rotate_key(self, now: datetime) -> str:
        """A new random root key becomes the active one (older keys still verify their tokens)."""
        key_id, key = f"k{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}", secrets.token_bytes(32)
        nonce = secrets.token_bytes(12)
        sealed = (nonce + self._aead.encrypt(nonce, key, key_id.encode())).hex()
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.update(root_keys).values(active=False))
            await conn.execute(sa.insert(root_keys).values(key_id=key_id, sealed=sealed, active=True, created_at=now))
        return key_id

    async def retire_key(self, key_id: str) -> bool:
        """Delete a root key: every token minted under it stops verifying (in every process, from the next
        check on)."""
        async with self._db.engine.begin() as conn:
            gone = (await conn.execute(sa.delete(root_keys).where(root_keys.c.key_id == key_id))).rowcount
        self._keys.pop(key_id, None)
        return bool(gone)

    async def active_key_id(self) -> str:
        """The active root key's id ("" before the first rotation)."""
        async with self._db.engine.connect() as conn:
            return str(await conn.scalar(sa.select(root_keys.c.key_id).where(root_keys.c.active)) or "")

    async def active_key(self, conn: AsyncConnection | None = None) -> tuple[str, bytes]:
        async with self._db.engine.connect() as c:
            key_id = await c.scalar(sa.select(root_keys.c.key_id).where(root_keys.c.active))
        if key_id is None:
            raise InvalidInput("no root key yet: run `westworld agent keys rotate` first")
        key = await self._root_key(key_id)
        assert key is not None
        return key_id, key

    async def _root_key(self, key_id: str, conn: AsyncConnection | None = None) -> bytes | None:
        """The root key as stored now (read every time: only the decryption is cached, by the sealed row)."""
        query = sa.select(root_keys.c.sealed).where(root_keys.c.key_id == key_id)
        if conn is None:
            async with self._db.engine.connect() as c:
                sealed = await c.scalar(query)
        else:
            sealed = await conn.scalar(query)
        return None if sealed is None else self._unseal(key_id, sealed)

    def _unseal(self, key_id: str, sealed: str) -> bytes:
        if self._sealed.get(key_id) == sealed and key_id in self._keys:
            return self._keys[key_id]
        raw = bytes.fromhex(sealed)
        key = self._aead.decrypt(raw[:12], raw[12:], key_id.encode())
        self._keys[key_id], self._sealed[key_id] = key, sealed
        return key

    async def mint(self, agent_id: str, actions: Sequence[str], token_id: str | None = None) -> str:
        key_id, key = await self.active_key()
        async with self._db.engine.connect() as conn:
            epoch = int(await conn.scalar(sa.select(counters.c.value).where(counters.c.name == REVOCATION_EPOCH))
                        or 0)
        ident = cap.TokenIdentity(key_id=key_id, token_id=token_id or secrets.token_hex(8), agent_id=agent_id,
                                  epoch=epoch)
        return cap.mint(key, ident, actions)

    # --- sealed tokens -------------------------------------------------------------------------------------
    async def sealing_key(self, now: datetime) -> tuple[str, bytes, str]:
        """(key id, private key, public key hex) of the workers' sealing key, created on first use (every worker
        over this database shares it)."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(seal_keys).where(seal_keys.c.key_id == SEAL_KEY_ID))).first()
        if row is None:
            private = PrivateKey.generate()
            nonce = secrets.token_bytes(12)
            sealed = (nonce + self._aead.encrypt(nonce, bytes(private), f"seal:{SEAL_KEY_ID}".encode())).hex()
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(sa.insert(seal_keys).values(
                        key_id=SEAL_KEY_ID, sealed=sealed, public_key=bytes(private.public_key).hex(), created_at=now))
            except sa.exc.IntegrityError:
                pass  # another worker created it first: use theirs
            async with self._db.engine.connect() as conn:
                row = (await conn.execute(sa.select(seal_keys).where(seal_keys.c.key_id == SEAL_KEY_ID))).one()
        raw = bytes.fromhex(row.sealed)
        private_key = self._aead.decrypt(raw[:12], raw[12:], f"seal:{row.key_id}".encode())
        return row.key_id, private_key, row.public_key

    async def claim_sealed(self, box_id: str, workflow_id: str, run_id: str, now: datetime) -> str | None:
        """Claim a sealed token for ``run_id``; returns the run that claimed it before, if another one."""
        async with self._db.engine.begin() as conn:
            prior = (await conn.execute(sa.select(sealed_claims.c.run_id)
                                        .where(sealed_claims.c.box_id == box_id))).scalar()
            if prior is None:
                await conn.execute(sa.insert(sealed_claims).values(box_id=box_id, workflow_id=workflow_id,
                                                                   run_id=run_id, at=now))
                return None
        return None if prior == run_id else str(prior)

    # --- revocation ----------------------------------------------------------------------------------------
    async def revoke_token(self, token_id: str, reason: str, now: datetime) -> None:
        async with self._db.engine.begin() as conn:
            if not await conn.scalar(sa.select(revoked.c.token_id).where(revoked.c.token_id == token_id)):
                await conn.execute(sa.insert(revoked).values(token_id=token_id, reason=reason, at=now))

    async def revocation_epoch(self) -> int:
        async with self._db.engine.connect() as conn:
            return int(await conn.scalar(sa.select(counters.c.value).where(counters.c.name == REVOCATION_EPOCH))
                       or 0)

    async def bump_revocation_epoch(self) -> int:
        """Revoke every token minted so far; new tokens are minted in the returned epoch."""
        async with self._db.engine.begin() as conn:
            value = int(await conn.scalar(sa.select(counters.c.value).where(counters.c.name == REVOCATION_EPOCH))
                        or 0) + 1
            await conn.execute(sa.delete(counters).where(counters.c.name == REVOCATION_EPOCH))
            await conn.execute(sa.insert(counters).values(name=REVOCATION_EPOCH, value=value))
        return value

    # --- registries ----------------------------------------------------------------------------------------
    async def add_node(self, node_id: str, region: str, public_key: str | None, now: datetime) -> None:
        """Register (or update) a mesh node; with a public key it is also a peer that can sign wide actions."""
        if not cv.NAME.fullmatch(node_id) or (region and not cv.NAME.fullmatch(region)):
            raise InvalidInput(f"node {node_id!r} / region {region!r}: letters, digits, '.', '_', ':' or '-'")
        if public_key is not None and (len(public_key) != 64 or not all(c in "0123456789abcdef" for c in public_key)):
            raise InvalidInput(f"node {node_id}: the public key must be 32 bytes of lower-case hex")
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.delete(nodes).where(nodes.c.node_id == node_id))
            await conn.execute(sa.insert(nodes).values(node_id=node_id, region=region, public_key=public_key,
                                                       added_at=now))

    async def add_nodes_if_absent(self, node_ids: list[str], region: str, now: datetime) -> list[str]:
        """Register the nodes not registered yet (a registered node, and a peer's key, are left as they are)."""
        async with self._db.engine.begin() as conn:
            known = set((await conn.execute(sa.select(nodes.c.node_id).where(nodes.c.node_id.in_(node_ids))))
                        .scalars())
            added = [n for n in node_ids if n not in known]
            for node_id in added:
                if not cv.NAME.fullmatch(node_id) or (region and not cv.NAME.fullmatch(region)):
                    raise InvalidInput(f"node {node_id!r} / region {region!r}: letters, digits, '.', '_', ':' or '-'")
                await conn.execute(sa.insert(nodes).values(node_id=node_id, region=region, public_key=None,
                                                           added_at=now))
        return added

    async def deregister_nodes(self, node_ids: list[str]) -> list[str]:
        """Remove these nodes (keyless ones: a peer stays) from the registry; returns those removed (idempotent).
        What a run registered for a mesh it made goes with the mesh, so the live count stays true."""
        gone: list[str] = []
        async with self._db.engine.begin() as conn:
            for i in range(0, len(node_ids), 500):
                chunk = node_ids[i:i + 500]
                gone += (await conn.execute(sa.select(nodes.c.node_id).where(
                    nodes.c.node_id.in_(chunk), nodes.c.public_key.is_(None)))).scalars()
                await conn.execute(sa.delete(nodes).where(nodes.c.node_id.in_(chunk), nodes.c.public_key.is_(None)))
        return gone

    async def remove_node(self, node_id: str) -> bool:
        """Remove a node or peer from the registry; whether it was registered."""
        async with self._db.engine.begin() as conn:
            return bool((await conn.execute(sa.delete(nodes).where(nodes.c.node_id == node_id))).rowcount)

    async def peers(self) -> dict[str, str]:
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(sa.select(nodes.c.node_id, nodes.c.public_key)
                                      .where(nodes.c.public_key.is_not(None)))
            return {r.node_id: r.public_key for r in rows}

    async def node_regions(self) -> dict[str, str]:
        async with self._db.engine.connect() as conn:
            return {r.node_id: r.region for r in await conn.execute(sa.select(nodes.c.node_id, nodes.c.region))}

    async def add_guardian(self, guardian_id: str, public_key: str, now: datetime) -> None:
        if not cv.NAME.fullmatch(guardian_id) or len(public_key) != 64:
            raise InvalidInput(f"guardian {guardian_id!r}: needs a plain id and a 32-byte hex public key")
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.delete(guardians).where(guardians.c.guardian_id == guardian_id))
            await conn.execute(sa.insert(guardians).values(guardian_id=guardian_id, public_key=public_key,
                                                           added_at=now))

    async def remove_guardian(self, guardian_id: str) -> bool:
        """Remove a guardian from the registry; whether it was registered."""
        async with self._db.engine.begin() as conn:
            return bool((await conn.execute(sa.delete(guardians).where(guardians.c.guardian_id == guardian_id)))
                        .rowcount)

    async def guardians(self) -> dict[str, str]:
        async with self._db.engine.connect() as conn:
            return {r.guardian_id: r.public_key for r in await conn.execute(sa.select(guardians))}

    # --- the check -----------------------------------------------------------------------------------------
    async def check(self, inp: CapabilityCheckInput, now: datetime) -> CapabilityCheckOutcome:
        """Decide, record the decision and reserve the touched nodes atomically; a repeated ``action_id``
        answers with the decision recorded the first time."""
        if self._fast is not None:
            return await self._fast.check(inp, now)
        parsed, early = parse(inp)
        targets = sorted(set(inp.node_ids))
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:a))"), {"a": inp.agent_id})
            prior = (await conn.execute(sa.select(decisions.c.result, decisions.c.live_nodes)
                                        .where(decisions.c.action_id == inp.action_id))).first()
            if prior is not None:
                return CapabilityCheckOutcome(result=cap.CheckResult.model_validate_json(prior.result),
                                              live_nodes=prior.live_nodes)
            state, regions = await self._state(conn, parsed, targets, now)
            state.discharge_ttl_max = inp.discharge_ttl_max
            windows: dict[int, int] = {}
            key: bytes | None = None
            if parsed is not None:
                windows = {w: await self._window_usage(conn, inp.agent_id, targets, now - timedelta(seconds=w))
                           for w in cv.budget_windows(parsed.caveats)}
                key = await self._root_key(parsed.identity.key_id, conn)
            result = decide(inp, parsed, early, state, regions, windows, key)
            await conn.execute(sa.insert(decisions).values(
                action_id=inp.action_id, agent_id=inp.agent_id, action=inp.action, at=now,
                live_nodes=state.live_nodes, node_ids=json.dumps(targets), result=result.model_dump_json()))
            if not result.allowed:
                await conn.execute(sa.insert(events).values(
                    action_id=inp.action_id, agent_id=inp.agent_id, at=now, allowed=False, caveat=result.caveat,
                    node_ids="[]", endorsed_by="[]"))
            if result.allowed and targets:
                await conn.execute(sa.insert(usage), [
                    {"agent_id": inp.agent_id, "node_id": n, "action_id": inp.action_id, "at": now,
                     "state": "reserved"} for n in targets])
        return CapabilityCheckOutcome(result=result, live_nodes=state.live_nodes)

    async def _state(self, conn: AsyncConnection, parsed: cap.ParsedToken | None, targets: list[str],
                     now: datetime) -> tuple[cap.CheckState, dict[str, str]]:
        token_id = parsed.identity.token_id if parsed is not None else ""
        # one round trip for the four scalars of the check
        row = (await conn.execute(sa.select(
            sa.select(sa.func.max(halts.c.epoch)).where(
                halts.c.started_at.is_not(None), halts.c.resumed_at.is_(None)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(nodes).scalar_subquery(),
            sa.select(counters.c.value).where(counters.c.name == REVOCATION_EPOCH).scalar_subquery(),
            sa.select(sa.func.count()).select_from(revoked).where(revoked.c.token_id == token_id).scalar_subquery(),
        ))).one()
        halt, live, rev_epoch, is_revoked = int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), bool(row[3])
        regions: dict[str, str] = {}
        for i in range(0, len(targets), 500):
            rows = await conn.execute(sa.select(nodes.c.node_id, nodes.c.region)
                                      .where(nodes.c.node_id.in_(targets[i:i + 500])))
            regions.update({r.node_id: r.region for r in rows})
        return cap.CheckState(live_nodes=live, now=now, halt_epoch=halt, revoked=is_revoked,
                              revocation_epoch=rev_epoch), regions

    async def _window_usage(self, conn: AsyncConnection, agent_id: str, targets: list[str], since: datetime) -> int:
        rows = await conn.execute(sa.select(usage.c.node_id).distinct().where(
            usage.c.agent_id == agent_id, usage.c.at > since, usage.c.state != "released"))
        return len({r.node_id for r in rows} | set(targets))

    async def settle(self, action_id: str, confirmed: bool, now: datetime, endorsed_by: Sequence[str] = ()) -> int:
        """Confirm (executed) or release (denied later, failed) an action's reserved nodes; a confirmed action
        enters the anomaly feed with the peers that endorsed it. Idempotent by ``action_id``."""
        async with self._db.engine.begin() as conn:
            changed = int((await conn.execute(sa.update(usage).where(
                usage.c.action_id == action_id, usage.c.state == "reserved").values(
                state="confirmed" if confirmed else "released"))).rowcount or 0)
            decided = (await conn.execute(sa.select(decisions).where(decisions.c.action_id == action_id))).first()
            logged = await conn.scalar(sa.select(events.c.seq).where(events.c.action_id == action_id))
            if confirmed and decided is not None and logged is None:
                await conn.execute(sa.insert(events).values(
                    action_id=action_id, agent_id=decided.agent_id, at=now, allowed=True, caveat="",
                    node_ids=decided.node_ids, endorsed_by=json.dumps(sorted(endorsed_by))))
        return changed

    async def usage_in_window(self, agent_id: str, since: datetime) -> int:
        async with self._db.engine.connect() as conn:
            return await self._window_usage(conn, agent_id, [], since)

    async def events(self, after_seq: int, limit: int) -> tuple[list[AgentEvent], int, int]:
        async with self._db.engine.connect() as conn:
            rows = list(await conn.execute(sa.select(events).where(events.c.seq > after_seq)
                                           .order_by(events.c.seq).limit(limit)))
            live = int(await conn.scalar(sa.select(sa.func.count()).select_from(nodes)) or 0)
        found = [AgentEvent(seq=r.seq, agent_id=r.agent_id, action_id=r.action_id, at=_utc(r.at) or r.at,
                            allowed=r.allowed, caveat=r.caveat, node_ids=json.loads(r.node_ids),
                            endorsed_by=json.loads(r.endorsed_by)) for r in rows]
        return found, (rows[-1].seq if rows else after_seq), live

    # --- halts ---------------------------------------------------------------------------------------------
    async def allocate_halt(self, request_key: str, reason: str) -> int:
        async with self._db.engine.begin() as conn:
            found = await conn.scalar(sa.select(halts.c.epoch).where(halts.c.request_key == request_key))
            if found is not None:
                return int(found)
            epoch = int(await conn.scalar(sa.select(sa.func.max(halts.c.epoch))) or 0) + 1
            await conn.execute(sa.insert(halts).values(epoch=epoch, request_key=request_key, reason=reason))
            return epoch

    async def set_halt(self, epoch: int, reason: str, now: datetime) -> HaltState:
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(sa.select(halts).where(halts.c.epoch == epoch))).first()
            if row is None:
                await conn.execute(sa.insert(halts).values(epoch=epoch, request_key=f"direct:{epoch}", reason=reason,
                                                           started_at=now))
            elif row.started_at is None:
                await conn.execute(sa.update(halts).where(halts.c.epoch == epoch).values(started_at=now))
        return await self.halt_state(epoch)

    async def end_halt(self, epoch: int, resumed_by: list[str], now: datetime) -> HaltState:
        async with self._db.engine.begin() as conn:
            await conn.execute(sa.update(halts).where(halts.c.epoch == epoch, halts.c.resumed_at.is_(None))
                               .values(resumed_at=now, resumed_by=json.dumps(sorted(resumed_by))))
        return await self.halt_state(epoch)

    async def halt_state(self, epoch: int | None = None) -> HaltState:
        """The given halt, else the active one (the newest), else not halted."""
        query = sa.select(halts).where(halts.c.started_at.is_not(None))
        query = query.where(halts.c.epoch == epoch) if epoch else query.where(halts.c.resumed_at.is_(None))
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query.order_by(halts.c.epoch.desc()).limit(1))).first()
        if row is None:
            return HaltState(halted=False)
        return _halt_state(row)


def _halt_state(row: Any) -> HaltState:
    return HaltState(halted=row.resumed_at is None, epoch=row.epoch, reason=row.reason,
                     since=_utc(row.started_at), resumed_at=_utc(row.resumed_at), resumed_by=json.loads(row.resumed_by))

