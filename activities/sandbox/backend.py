"""The one sandbox activity interface; each backend (``local``, ``kubernetes``) implements ``SandboxBackend``.

``SandboxActivities`` registers the activity names of ``westworld/sandbox.py`` and dispatches each call on the
backend its input names. A backend this worker was not built with is a permanent ``BackendUnavailable`` error;
a backend's ``PermanentError`` reaches the workflow as a non-retryable ``ApplicationError`` of the same type (the
worker's interceptor); anything else (a process that did not start, a server that did not answer) retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from temporalio import activity

from westworld.errors import BACKEND_UNAVAILABLE, PermanentError
from westworld.sandbox import (
    Backend,
    FaultApplied,
    FaultInput,
    MeshActionInput,
    MeshActionResult,
    ProvisionInput,
    SandboxRef,
    TeardownResult,
)


class SandboxBackend(Protocol):
    """What a sandbox backend does; every method is idempotent by its input's business key."""

    async def provision(self, inp: ProvisionInput, progress: Callable[[str], None]) -> SandboxRef: ...
    async def apply_fault(self, inp: FaultInput) -> FaultApplied: ...
    async def clear_fault(self, inp: FaultInput) -> FaultApplied: ...
    async def teardown(self, ref: SandboxRef) -> TeardownResult: ...
    async def execute_mesh_action(self, inp: MeshActionInput) -> MeshActionResult: ...


def _heartbeat(message: str) -> None:
    """Heartbeat when running as an activity; a no-op when a backend is called directly (tests, CLI)."""
    if activity.in_activity():
        activity.heartbeat(message)


class SandboxActivities:
    """The sandbox activities, built with the backends this worker can reach."""

    def __init__(self, backends: Mapping[Backend, SandboxBackend],
                 how_to_configure: Mapping[Backend, str] | None = None) -> None:
        """``how_to_configure``: per backend, what configures it on this worker (said when it is not configured)."""
        self._backends = dict(backends)
        self._how_to_configure = dict(how_to_configure or {})

    def _backend(self, backend: Backend) -> SandboxBackend:
        found = self._backends.get(backend)
        if found is None:
            configured = ", ".join(sorted(b.value for b in self._backends)) or "none"
            hint = f"; {how}" if (how := self._how_to_configure.get(backend)) else ""
            raise PermanentError(
                f"sandbox backend {backend.value!r} is not configured on this worker (configured: {configured}){hint}",
                type=BACKEND_UNAVAILABLE,
            )
        return found

    @activity.defn(name="provision_sandbox")
    async def provision_sandbox(self, inp: ProvisionInput) -> SandboxRef:
        """Provision (or find, if it exists) the sandbox ``inp.sandbox_id``; heartbeats each step."""
        return await self._backend(inp.backend).provision(inp, _heartbeat)

    @activity.defn(name="apply_fault")
    async def apply_fault(self, inp: FaultInput) -> FaultApplied:
        """Apply one chaos fault to the sandbox's nodes (idempotent by ``fault_id``)."""
        _heartbeat(f"applying {inp.fault.kind.value} fault {inp.fault_id}")
        return await self._backend(inp.sandbox.backend).apply_fault(inp)

    @activity.defn(name="clear_fault")
    async def clear_fault(self, inp: FaultInput) -> FaultApplied:
        """Undo a fault (a killed node is restarted); clearing a fault that is not applied is a no-op."""
        _heartbeat(f"clearing {inp.fault.kind.value} fault {inp.fault_id}")
        return await self._backend(inp.sandbox.backend).clear_fault(inp)

    @activity.defn(name="teardown_sandbox")
    async def teardown_sandbox(self, ref: SandboxRef) -> TeardownResult:
        """Remove everything the sandbox holds; safe on a half-provisioned sandbox and when repeated."""
        _heartbeat(f"tearing down {ref.sandbox_id}")
        return await self._backend(ref.backend).teardown(ref)

    @activity.defn(name="execute_mesh_action")
    async def execute_mesh_action(self, inp: MeshActionInput) -> MeshActionResult:
        """Set a version or config on mesh nodes; returns each node's previous version for a rollback."""
        _heartbeat(f"{inp.action.value} on {len(inp.node_ids)} node(s)")
        return await self._backend(inp.target.backend).execute_mesh_action(inp)

    def activities(self) -> list[Callable[..., Awaitable[object]]]:
        """The bound activity methods, for a worker's ``activities=``."""
        return [self.provision_sandbox, self.apply_fault, self.clear_fault, self.teardown_sandbox,
                self.execute_mesh_action]
