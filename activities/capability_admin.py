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

from nacl.public import PublicKey, SealedBox
from temporalio import activity

from activities.sql.admin_store import AdminStore
from activities.sql.capability_store import CapabilityStore
from westworld.agents import AdminAction, AdminApply, AdminChange, AdminOutcome, CapabilityRegistries
from westworld.authority import AdminSigners
from westworld.errors import UNAUTHORISED, InvalidInput, PermanentError

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
    def __init__(self, store: CapabilityStore, admin: AdminStore, genesis_operator_file: Path,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._store, self._admin, self._genesis, self._clock = store, admin, genesis_operator_file, clock

    async def operators(self) -> dict[str, str]:
        found = await self._admin.operators()
        if (genesis := read_public_key(self._genesis)) is not None:
            found.setdefault(GENESIS_OPERATOR, genesis)
        return found

    @activity.defn(name="admin_signers")
    async def admin_signers(self) -> AdminSigners:
        return AdminSigners(operators=await self.operators(), guardians=await self._store.guardians())

    @activity.defn(name="capability_registries")
    async def registries(self) -> CapabilityRegistries:
        return CapabilityRegistries(nodes=await self._store.node_regions(), peers=await self._store.peers(),
                                    guardians=await self._store.guardians(), operators=await self.operators(),
                                    halt=await self._store.halt_state(), active_key=await self._store.active_key_id(),
                                    revocation_epoch=await self._store.revocation_epoch())

    @activity.defn(name="apply_admin_change")
    async def apply(self, inp: AdminApply) -> AdminOutcome:
        """Apply a change the workflow authorised, once per nonce (a retry of the same run gets the outcome)."""
        run_id = activity.info().workflow_run_id
        row = await self._admin.use_nonce(inp.nonce, run_id, self._clock())
        if row is not None and row.run_id != run_id:
            raise PermanentError(f"{inp.nonce}: this signed change was already applied (at "
                                 f"{row.at}); a signature counts once", type=UNAUTHORISED)
        if row is not None and row.outcome and inp.change.action is not AdminAction.MINT:  # a mint is re-made
            return AdminOutcome.model_validate_json(row.outcome)
        outcome = await self._apply(inp.change, inp.nonce)
        stored = outcome.model_copy(update={"sealed_token": ""})  # re-minted on a retry, never stored
        await self._admin.save_outcome(inp.nonce, stored.model_dump_json())
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
            await self._admin.add_operator(c.subject, key, now)
            return AdminOutcome(detail=f"registered operator {c.subject}")
        if a in {AdminAction.REMOVE_NODE, AdminAction.REMOVE_GUARDIAN, AdminAction.REMOVE_OPERATOR}:
            remove = {AdminAction.REMOVE_NODE: store.remove_node, AdminAction.REMOVE_GUARDIAN: store.remove_guardian,
                      AdminAction.REMOVE_OPERATOR: self._admin.remove_operator}[a]
            if not await remove(c.subject):
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

