"""Capability activities: the check (root keys stay in this process; only the decision leaves), usage
settlement, the signer registries, the decision feed of the anomaly watch, and halt epochs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.capability_store import CapabilityStore
from westworld.agents import (
    AgentEventsInput,
    AgentEventsPage,
    CapabilityCheckInput,
    CapabilityCheckOutcome,
    HaltEnd,
    HaltRequest,
    HaltSet,
    HaltState,
    RegisterNodesInput,
    SignerRegistry,
    UsageSettle,
)
from westworld.errors import WestworldError


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
        Idempotent by ``action_id``: a retry answers with the recorded decision."""
        try:
            return await self._store.check(inp, self._clock())
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err

    @activity.defn(name="register_nodes")
    async def register_nodes(self, inp: RegisterNodesInput) -> list[str]:
        """Register the nodes not registered yet; returns those added (idempotent)."""
        try:
            return await self._store.add_nodes_if_absent(inp.node_ids, inp.region, self._clock())
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err

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
                self.agent_events, self.allocate_halt_epoch, self.set_halt, self.clear_halt, self.halt_state]
