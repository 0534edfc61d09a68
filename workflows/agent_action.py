"""AgentActionWorkflow, the mesh node controller: an agent's action runs only if its capability token allows it,
and a wide action only with k Ed25519 signatures from distinct registered peer nodes.

    load_policy -> the peer rule in force (the policy's, or stricter as asked; a looser ask fails LooserThanPolicy)
    the token must be sealed for this workflow and input (else fails TokenNotSealed: a token in clear is leaked)
    check (activity; the sealed token is opened there, root keys never leave it) -> denied: audit, done
    wide (more than the rule's threshold of nodes or % of live nodes)?
        -> wait for k peers through the ``submit_peer_signature`` update (timeout: denied)
        -> the network halted while waiting? denied ``network-halted``
    execute_mesh_action (if a target is given) -> confirm the budget reservation -> audit

Every decision, allowed or denied, is appended to the audit log. Workflow id ``agent-action:<agent>:<action id>``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import keys, peers
    from westworld import sealed as sl
    from westworld.agents import (
        AgentActionInput,
        AgentActionResult,
        AgentActionStatus,
        CapabilityCheckInput,
        CapabilityCheckOutcome,
        HaltState,
        ResealInput,
        SealedClaim,
        SignerRegistry,
        UsageSettle,
    )
    from westworld.capability import CheckResult, halted, identity_of
    from westworld.errors import (
        AGENT_ACTION_FAILED,
        SIGNATURES_CLOSED,
        TOKEN_NOT_SEALED,
        Denial,
        PermanentError,
        SignatureRejected,
        WestworldError,
    )
    from westworld.peer_rule import PeerRule, is_wide, legacy_rule, peer_rule
    from westworld.policy import NetworkPolicy
    from westworld.sandbox import MeshActionInput, MeshActionResult
    from workflows.audit import append_audit
    from workflows.steps import AGENT_ID, set_step

PEER_SIGNATURES = "peer-signatures"
QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
EXECUTE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
TRUST_PATCH = "policy-peer-rule-sealed-token"  # runs started before: input thresholds, token in clear


async def load_rule(where: str, *, threshold_nodes: int | None, threshold_pct: float | None,
                    peers_required: int | None, wait: timedelta | None,
                    names: tuple[str, str, str] = ("peer_threshold_nodes", "peer_threshold_pct", "peers_required"),
                    ) -> PeerRule:
    """The peer rule in force: the network policy's (``load_policy``), stricter as asked (``names``: how the asker
    spells the three fields, for the refusal).

    Raises:
        PermanentError: (``LooserThanPolicy``) a looser ask, naming the policy's value.
    """
    policy = await workflow.execute_activity("load_policy", result_type=NetworkPolicy,
                                             start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
    return peer_rule(policy.peers, where, threshold_nodes=threshold_nodes, threshold_pct=threshold_pct,
                     peers_required=peers_required, wait=wait, names=names)


async def claim_token(where: str, sealed: str, input_digest: str) -> SealedClaim:
    """Have the worker open the calling workflow's sealed token and claim it for this run (canary, experiment).

    Raises:
        ApplicationError: (``TokenNotSealed``) it does not open, fit this workflow and input, or was used before.
    """
    try:
        claim: SealedClaim = await workflow.execute_activity(
            "claim_sealed_token", ResealInput(token=sealed, input_digest=input_digest), result_type=SealedClaim,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
    except ActivityError as err:
        if isinstance(err.cause, ApplicationError):
            raise ApplicationError(f"{where}: {err.cause.message}", type=err.cause.type, non_retryable=True) from None
        raise
    return claim


def not_sealed(where: str, field: str, token: str) -> PermanentError:
    """The refusal of a token given in clear (it names the token's id so it can be revoked, never the token)."""
    try:
        named = f"token {identity_of(token).token_id}"
    except Denial:
        named = "the value"
    return PermanentError(
        f"{where}: {field} is not a sealed token; a token in clear sits in workflow history for anyone who reads it, "
        f"so it is refused and must be treated as leaked: revoke {named} and seal a new one for this workflow "
        f"(`westworld agent seal`, or the SDK's seal helper)", type=TOKEN_NOT_SEALED)


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
        self._rule: PeerRule | None = None

    @workflow.run
    async def run(self, input: AgentActionInput) -> AgentActionResult:
        wid = workflow.info().workflow_id
        self._set("checking capability")
        check = CapabilityCheckInput(action_id=wid, agent_id=input.agent_id, token=input.token,
                                     discharges=input.discharges, action=input.action.value, node_ids=input.node_ids)
        if workflow.patched(TRUST_PATCH):
            try:
                self._rule = rule = await load_rule(
                    wid, threshold_nodes=input.peer_threshold_nodes, threshold_pct=input.peer_threshold_pct,
                    peers_required=input.peers_required, wait=input.peer_wait)
                if not sl.is_sealed(input.token):
                    raise not_sealed(wid, "token", input.token)
            except WestworldError as err:
                await self._finish(AgentActionResult(agent_id=input.agent_id, action_id=input.action_id,
                                                     allowed=False, caveat=err.type, reason=err.message),
                                   "capability.denied")
                raise ApplicationError(err.message, type=err.type, non_retryable=True) from None
            check = check.model_copy(update={
                "sealed": True, "input_digest": sl.input_digest(input, "token"), "action_digest": self._digest.hex(),
                "discharge_ttl_max": rule.discharge_ttl_max})
        else:
            self._rule = legacy_rule(threshold_nodes=input.peer_threshold_nodes,
                                     threshold_pct=input.peer_threshold_pct, peers_required=input.peers_required,
                                     wait=input.peer_wait)
        outcome = await workflow.execute_activity(
            "check_capability", check, result_type=CapabilityCheckOutcome,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        self._decision = decision = outcome.result
        result = AgentActionResult(agent_id=input.agent_id, action_id=input.action_id, allowed=decision.allowed,
                                   caveat=decision.caveat, reason=decision.reason)
        if not decision.allowed:
            return await self._finish(result, "capability.denied")
        self._wide = is_wide(len(set(input.node_ids)), outcome.live_nodes, self._rule)
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
                                    version=input.version, config=input.config, action_id=keys.execute_action_id(wid)),
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
        assert self._rule is not None
        k, wait = self._rule.peers_required, self._rule.wait
        if len(self._registry) < k:
            self._peer_reason = f"{k} peer signatures are needed but only {len(self._registry)} peers are registered"
            return False
        self._set("awaiting peer signatures")
        self._collecting = True
        try:
            await workflow.wait_condition(lambda: len(self._signed) >= k, timeout=wait)
        except TimeoutError:
            self._peer_reason = f"{len(self._signed)} of {k} peer signatures within {wait}"
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
        receipt = await append_audit(kind, workflow.info().workflow_id, payload)
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
        except SignatureRejected as err:
            raise ApplicationError(err.message, type=err.reason, non_retryable=True) from None

    @workflow.query
    def status(self) -> AgentActionStatus:
        return AgentActionStatus(step=self._step, digest=self._digest.hex(), wide=self._wide,
                                 peers_required=self._rule.peers_required if self._wide and self._rule else 0,
                                 peers_signed=sorted(self._signed), decision=self._decision)
