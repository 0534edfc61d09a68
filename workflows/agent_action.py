"""AgentActionWorkflow, the mesh node controller: an agent's action runs only if its capability token allows it,
and a wide action only with k Ed25519 signatures from distinct registered peer nodes.

    check (activity; root keys never leave it) -> denied: audit, done
    wide (more than ``peer_threshold_nodes`` nodes or ``peer_threshold_pct`` % of live nodes)?
        -> wait for k peers through the ``submit_peer_signature`` update (timeout: denied)
        -> the network halted while waiting? denied ``network-halted``
    execute_mesh_action (if a target is given) -> confirm the budget reservation -> audit

Every decision, allowed or denied, is appended to the audit log. Workflow id ``agent-action:<agent>:<action id>``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import peers
    from westworld.agents import (
        AgentActionInput,
        AgentActionResult,
        AgentActionStatus,
        CapabilityCheckInput,
        CapabilityCheckOutcome,
        HaltState,
        SignerRegistry,
        UsageSettle,
    )
    from westworld.audit import AuditEntryInput, AuditReceipt
    from westworld.capability import CheckResult, halted
    from westworld.errors import AGENT_ACTION_FAILED, SIGNATURES_CLOSED
    from westworld.sandbox import MeshActionInput, MeshActionResult
    from workflows.steps import set_step

AGENT_ID = SearchAttributeKey.for_keyword("AgentId")
PEER_SIGNATURES = "peer-signatures"
QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
EXECUTE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


def is_wide(node_count: int, live_nodes: int, inp: AgentActionInput) -> bool:
    return node_count > inp.peer_threshold_nodes or (
        live_nodes > 0 and 100.0 * node_count / live_nodes > inp.peer_threshold_pct) or live_nodes <= 0


@workflow.defn
class AgentActionWorkflow:
    @workflow.init
    def __init__(self, input: AgentActionInput) -> None:
        self._input = input
        self._step = "checking capability"
        self._digest = peers.action_digest(peers.ActionDigestInput(
            workflow_id=workflow.info().workflow_id, action_id=input.action_id, agent_id=input.agent_id,
            action=input.action.value, node_ids=input.node_ids, version=input.version, config=input.config))
        self._registry: dict[str, str] = {}
        self._signed: dict[str, str] = {}
        self._collecting = False
        self._wide = False
        self._decision: CheckResult | None = None
        self._peer_reason = ""

    @workflow.run
    async def run(self, input: AgentActionInput) -> AgentActionResult:
        wid = workflow.info().workflow_id
        self._set("checking capability")
        outcome = await workflow.execute_activity(
            "check_capability",
            CapabilityCheckInput(action_id=wid, agent_id=input.agent_id, token=input.token,
                                 discharges=input.discharges, action=input.action.value, node_ids=input.node_ids),
            result_type=CapabilityCheckOutcome, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        self._decision = decision = outcome.result
        result = AgentActionResult(agent_id=input.agent_id, action_id=input.action_id, allowed=decision.allowed,
                                   caveat=decision.caveat, reason=decision.reason)
        if not decision.allowed:
            return await self._finish(result, "capability.denied")
        self._wide = is_wide(len(set(input.node_ids)), outcome.live_nodes, input)
        result.wide = self._wide
        if self._wide and not await self._collect_peers(input):
            await self._settle(confirmed=False)
            return await self._finish(result.model_copy(update={
                "allowed": False, "caveat": PEER_SIGNATURES, "peers": sorted(self._signed),
                "reason": self._peer_reason}), "capability.denied")
        result.peers = sorted(self._signed)
        if self._wide:
            # The peers may have taken long; a halt declared meanwhile stops the action before it runs.
            halt = await workflow.execute_activity(
                "network_halt_state", result_type=HaltState, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK)
            if halt.halted:
                await self._settle(confirmed=False)
                denied = halted(halt.epoch)
                return await self._finish(result.model_copy(update={
                    "allowed": False, "caveat": denied.caveat, "reason": denied.reason}), "capability.denied")
        if input.target is not None:
            self._set("executing")
            try:
                done = await workflow.execute_activity(
                    "execute_mesh_action",
                    MeshActionInput(target=input.target, action=input.action, node_ids=input.node_ids,
                                    version=input.version, config=input.config, action_id=f"{wid}:execute"),
                    result_type=MeshActionResult, start_to_close_timeout=input.execute_timeout,
                    retry_policy=EXECUTE_RETRY)
            except ActivityError as err:
                await self._settle(confirmed=False)
                cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err.cause or err)
                await self._finish(result.model_copy(update={"reason": f"execution failed: {cause}"}),
                                   "agent_action.failed")
                raise ApplicationError(f"{wid}: allowed, but executing {input.action.value} failed: {cause}",
                                       type=AGENT_ACTION_FAILED, non_retryable=True) from err
            result.executed, result.applied, result.previous = True, done.applied, done.previous
        await self._settle(confirmed=True)
        return await self._finish(result, "capability.allowed")

    async def _collect_peers(self, input: AgentActionInput) -> bool:
        """Wait for k distinct registered peers' signatures over this action's digest; False on timeout."""
        registry = await workflow.execute_activity(
            "list_peer_signers", result_type=SignerRegistry, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK)
        self._registry = registry.signers
        k = input.peers_required
        if len(self._registry) < k:
            self._peer_reason = f"{k} peer signatures are needed but only {len(self._registry)} peers are registered"
            return False
        self._set("awaiting peer signatures")
        self._collecting = True
        try:
            await workflow.wait_condition(lambda: len(self._signed) >= k, timeout=input.peer_wait)
        except TimeoutError:
            self._peer_reason = f"{len(self._signed)} of {k} peer signatures within {input.peer_wait}"
            return False
        finally:
            self._collecting = False
        return True

    async def _settle(self, confirmed: bool) -> None:
        await workflow.execute_activity(
            "settle_capability_usage", UsageSettle(action_id=workflow.info().workflow_id, confirmed=confirmed,
                                                   endorsed_by=sorted(self._signed) if confirmed else []),
            result_type=int, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)

    async def _finish(self, result: AgentActionResult, kind: str) -> AgentActionResult:
        self._set("recording decision")
        payload = result.model_dump(mode="json") | {"action": self._input.action.value,
                                                    "node_count": len(set(self._input.node_ids)),
                                                    "digest": self._digest.hex(),
                                                    "signatures": dict(sorted(self._signed.items()))}
        receipt = await workflow.execute_activity(
            "append_audit", AuditEntryInput(kind=kind, subject=workflow.info().workflow_id, payload=payload),
            result_type=AuditReceipt, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)))
        self._set("done")
        return result.model_copy(update={"audit_seq": receipt.seq})

    def _set(self, step: str) -> None:
        self._step = step
        set_step(step, AGENT_ID.value_set(self._input.agent_id))

    @workflow.update
    async def submit_peer_signature(self, req: peers.SignatureRequest) -> int:
        """A registered peer's Ed25519 signature over :meth:`status`'s digest; returns how many are in."""
        self._signed[req.signer_id] = req.signature
        return len(self._signed)

    @submit_peer_signature.validator
    def _validate_peer(self, req: peers.SignatureRequest) -> None:
        if not self._collecting:
            raise ApplicationError(f"{workflow.info().workflow_id} is not collecting peer signatures "
                                   f"(step: {self._step})", type=SIGNATURES_CLOSED, non_retryable=True)
        try:
            peers.validate(req, self._registry, self._digest, self._signed)
        except peers.SignatureRejected as err:
            raise ApplicationError(err.message, type=err.reason, non_retryable=True) from None

    @workflow.query
    def status(self) -> AgentActionStatus:
        return AgentActionStatus(step=self._step, digest=self._digest.hex(), wide=self._wide,
                                 peers_required=self._input.peers_required if self._wide else 0,
                                 peers_signed=sorted(self._signed), decision=self._decision)
