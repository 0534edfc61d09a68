"""Capability activities: the check (root keys stay in this process; only the decision leaves), usage
settlement, the signer registries, the decision feed of the anomaly watch, and halt epochs.

Tokens reach these activities sealed (westworld/sealed.py): each opens the box with the workers' sealing key only
for the workflow execution calling it (type and id from ``activity.info()``, the input digest from the workflow's
own input) and claims it for that run; the token is used here and never returned.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from temporalio import activity

from activities.sql.capability_store import CapabilityStore
from westworld import capability as cap
from westworld import sealed as sl
from westworld.agents import (
    AgentEventsInput,
    AgentEventsPage,
    CapabilityCheckInput,
    CapabilityCheckOutcome,
    CapabilityDirectory,
    DirectoryRequest,
    HaltEnd,
    HaltRequest,
    HaltSet,
    HaltState,
    RegisterNodesInput,
    ResealInput,
    SealedClaim,
    SealingKey,
    SignerRegistry,
    UsageSettle,
)
from westworld.errors import Denial, InvalidInput, SealRefused


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CapabilityActivities:
    """Built with the :class:`CapabilityStore`; ``clock`` is injectable for tests of windows."""

    def __init__(self, store: CapabilityStore, clock: Callable[[], datetime] = _utcnow) -> None:
        self._store = store
        self._clock = clock

    @activity.defn(name="check_capability")
    async def check_capability(self, inp: CapabilityCheckInput) -> CapabilityCheckOutcome:
        """The full capability check; an allowed action's nodes are reserved against the budget atomically.
        Idempotent by ``action_id``: a retry answers with the recorded decision. A sealed token that does not
        open, does not fit this workflow and input, or was claimed by another run is denied (``sealed-token``)
        before anything is recorded under this action id."""
        if inp.sealed:
            try:
                token = await self._open(inp.token, inp.input_digest)
            except SealRefused as refused:
                return CapabilityCheckOutcome(result=cap.CheckResult(
                    allowed=False, caveat=sl.CAVEAT, reason=refused.reason, agent_id=inp.agent_id), live_nodes=0)
            inp = inp.model_copy(update={"token": token})
        return await self._store.check(inp, self._clock())

    @activity.defn(name="claim_sealed_token")
    async def claim_sealed_token(self, inp: ResealInput) -> SealedClaim:
        """Open the calling workflow's sealed token and claim it for this run (``inp.child`` is ignored); returns
        whose it is. Refused (``TokenNotSealed``, non-retryable) naming why."""
        token = await self._open(inp.token, inp.input_digest)
        try:
            ident = cap.identity_of(token)
        except Denial as d:
            raise SealRefused(f"the sealed token: {d.reason}") from None
        return SealedClaim(agent_id=ident.agent_id, token_id=ident.token_id)

    @activity.defn(name="reseal_token")
    async def reseal_token(self, inp: ResealInput) -> str:
        """The calling workflow's token, sealed for its child ``inp.child`` (the token never leaves in clear)."""
        if inp.child is None:
            raise InvalidInput("reseal_token: no child binding given")
        token = await self._open(inp.token, inp.input_digest)
        key_id, _private, public = await self._store.sealing_key(self._clock())
        return sl.seal(token, inp.child, key_id, bytes.fromhex(public), secrets.token_bytes(32),
                       secrets.token_bytes(24))

    @activity.defn(name="capability_directory")
    async def capability_directory(self, inp: DirectoryRequest) -> CapabilityDirectory:
        """Public material for clients: the sealing key and the requested peers' public keys."""
        key_id, _private, public = await self._store.sealing_key(self._clock())
        registry = await self._store.peers() if inp.peers else {}
        unknown = [p for p in inp.peers if p not in registry]
        if unknown:
            raise InvalidInput(f"peers {unknown} are not registered (see `westworld agent peers list`)")
        return CapabilityDirectory(sealing_key=SealingKey(key_id=key_id, public_key=public),
                                   peers={p: registry[p] for p in inp.peers})

    async def _open(self, sealed: str, input_digest: str) -> str:
        """Open a sealed token for the calling workflow execution and claim it for its run."""
        info = activity.info()
        if not info.workflow_id or not info.workflow_run_id or not info.workflow_type:
            raise SealRefused("a sealed token is opened only for the workflow execution it was sealed for")
        key_id, private, _public = await self._store.sealing_key(self._clock())
        if sl.key_id_of(sealed) != key_id:
            raise SealRefused(f"the token is sealed to key {sl.key_id_of(sealed)!r}, not the workers' {key_id!r}")
        try:
            expected = sl.Binding(workflow_type=info.workflow_type, workflow_id=info.workflow_id,
                                  input_digest=input_digest)
        except ValueError:
            raise SealRefused("the workflow gave no input digest to check the sealed token against") from None
        token = sl.open_sealed(sealed, private, expected)
        prior = await self._store.claim_sealed(sl.box_id(sealed), info.workflow_id, info.workflow_run_id, self._clock())
        if prior is not None:
            raise SealRefused(f"this sealed token was already used by run {prior} of {info.workflow_id!r}; a sealed "
                                 f"token authorises one execution (seal the token again for a new action)")
        return token

    @activity.defn(name="register_nodes")
    async def register_nodes(self, inp: RegisterNodesInput) -> list[str]:
        """Register the nodes not registered yet; returns those added (idempotent)."""
        return await self._store.add_nodes_if_absent(inp.node_ids, inp.region, self._clock())

    @activity.defn(name="deregister_nodes")
    async def deregister_nodes(self, inp: RegisterNodesInput) -> list[str]:
        """Deregister what a run registered for a mesh it has torn down; returns those removed (idempotent)."""
        return await self._store.deregister_nodes(inp.node_ids)

    @activity.defn(name="settle_capability_usage")
    async def settle_usage(self, inp: UsageSettle) -> int:
        """Confirm an executed action's reserved nodes, or release them (peers timed out, execution failed)."""
        return await self._store.settle(inp.action_id, inp.confirmed, self._clock(), inp.endorsed_by)

    @activity.defn(name="list_peer_signers")
    async def list_peers(self) -> SignerRegistry:
        return SignerRegistry(signers=await self._store.peers())

    @activity.defn(name="list_guardian_signers")
    async def list_guardians(self) -> SignerRegistry:
        return SignerRegistry(signers=await self._store.guardians())

    @activity.defn(name="agent_events")
    async def agent_events(self, inp: AgentEventsInput) -> AgentEventsPage:
        """Capability decisions after ``after_seq`` (oldest first) and the live node count."""
        events, last, live = await self._store.events(inp.after_seq, inp.limit)
        return AgentEventsPage(events=events, last_seq=last, live_nodes=live)

    @activity.defn(name="allocate_halt_epoch")
    async def allocate_halt_epoch(self, inp: HaltRequest) -> int:
        return await self._store.allocate_halt(inp.request_key, inp.reason)

    @activity.defn(name="set_network_halt")
    async def set_halt(self, inp: HaltSet) -> HaltState:
        """From now on every capability check fails with ``network-halted`` (idempotent by epoch)."""
        return await self._store.set_halt(inp.epoch, inp.reason, self._clock())

    @activity.defn(name="clear_network_halt")
    async def clear_halt(self, inp: HaltEnd) -> HaltState:
        return await self._store.end_halt(inp.epoch, inp.resumed_by, self._clock())

    @activity.defn(name="network_halt_state")
    async def halt_state(self) -> HaltState:
        return await self._store.halt_state()

    def all(self) -> list[Callable[..., object]]:
        return [self.check_capability, self.register_nodes, self.settle_usage, self.list_peers, self.list_guardians,
                self.agent_events, self.allocate_halt_epoch, self.set_halt, self.clear_halt, self.halt_state,
                self.deregister_nodes,
                self.claim_sealed_token, self.reseal_token, self.capability_directory]
