"""NetworkHaltWorkflow: the halt epoch is set (every capability check then fails with ``network-halted``) until
k of the registered guardians sign the resume; the halt and the resume are audited. Workflow id ``halt:<epoch>``.

Guardians submit Ed25519 signatures over :func:`westworld.peers.resume_digest` (shown by the ``status`` query)
through the ``submit_guardian_signature`` update; its validator refuses unknown guardians, bad signatures and
repeats. The guardian registry is re-read every ``reminder_every`` while waiting.

Who may halt: only a workflow that has decided to (started as a child of the network's anomaly watch, id
``anomaly-watch``, on a critical finding, or of CapabilityAdminWorkflow on an operator's signed request). A halt
started directly by whoever reaches Temporal, or by any other workflow, is refused (``Unauthorised``) before
anything is halted; k is the policy's ``watch.guardians_required_min`` unless the input asks for more.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import authority, keys, peers
    from westworld.agents import (
        HaltEnd,
        HaltSet,
        HaltState,
        NetworkHaltInput,
        NetworkHaltResult,
        NetworkHaltStatus,
        SignerRegistry,
    )
    from westworld.audit import AuditReceipt
    from westworld.errors import SIGNATURES_CLOSED, UNAUTHORISED, SignatureRejected
    from westworld.policy import NetworkPolicy
    from workflows.audit import append_audit
    from workflows.steps import set_step

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
# Runs from before this patch accepted any starter and the input's k.
AUTHORISED_HALT = "halt-authorised-starter"


@workflow.defn
class NetworkHaltWorkflow:
    @workflow.init
    def __init__(self, input: NetworkHaltInput) -> None:
        self._input = input
        self._digest = peers.resume_digest(input.epoch, workflow.info().workflow_id)
        self._registry: dict[str, str] = {}
        self._signed: dict[str, str] = {}
        self._halted = False
        self._collecting = False
        self._k = input.guardians_required

    @workflow.run
    async def run(self, input: NetworkHaltInput) -> NetworkHaltResult:
        if workflow.patched(AUTHORISED_HALT):
            parent = workflow.info().parent
            if not authority.may_declare_halt(parent.workflow_id if parent else None):
                raise ApplicationError(
                    f"halt {input.epoch}: a halt is declared by the network's anomaly watch ({keys.WATCH_ID}) or "
                    "by an operator's signed request (`westworld halt start --key`), never started directly or by "
                    f"another workflow ({parent.workflow_id if parent else 'no parent'})", type=UNAUTHORISED,
                    non_retryable=True)
            policy = await workflow.execute_activity(
                "load_policy", result_type=NetworkPolicy, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK)
            self._k = max(input.guardians_required, policy.watch.guardians_required_min)
        k = self._k
        set_step("halting")
        await workflow.execute_activity(
            "set_network_halt", HaltSet(epoch=input.epoch, reason=input.reason), result_type=HaltState,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        self._halted = True
        await self._audit("network.halt", {"epoch": input.epoch, "reason": input.reason,
                                           "findings": [f.model_dump(mode="json") for f in input.findings]})
        self._collecting = True
        while len(self._signed) < k:
            await self._refresh_registry()
            set_step(f"halted: awaiting {k} guardian signatures "
                     f"({len(self._signed)} in, {len(self._registry)} registered)")
            try:
                await workflow.wait_condition(lambda: len(self._signed) >= k, timeout=input.reminder_every)
            except TimeoutError:
                continue
        self._collecting = False
        await workflow.wait_condition(workflow.all_handlers_finished)
        set_step("resuming")
        resumed_by = sorted(self._signed)
        await workflow.execute_activity(
            "clear_network_halt", HaltEnd(epoch=input.epoch, resumed_by=resumed_by), result_type=HaltState,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        self._halted = False
        seq = await self._audit("network.resume", {"epoch": input.epoch, "resumed_by": resumed_by,
                                                   "digest": self._digest.hex(), "signatures": dict(
                                                       sorted(self._signed.items()))})
        set_step("done")
        return NetworkHaltResult(epoch=input.epoch, resumed_by=resumed_by, audit_seq=seq)

    async def _refresh_registry(self) -> None:
        registry = await workflow.execute_activity(
            "list_guardian_signers", result_type=SignerRegistry, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK)
        self._registry = registry.signers

    async def _audit(self, kind: str, payload: dict[str, object]) -> int:
        receipt: AuditReceipt = await append_audit(kind, workflow.info().workflow_id, payload)
        return receipt.seq

    @workflow.update
    async def submit_guardian_signature(self, req: peers.SignatureRequest) -> int:
        """A guardian's signature over the resume digest; returns how many guardians have signed."""
        self._signed[req.signer_id] = req.signature
        return len(self._signed)

    @submit_guardian_signature.validator
    def _validate(self, req: peers.SignatureRequest) -> None:
        if not self._collecting or len(self._signed) >= self._k:
            raise ApplicationError(f"halt {self._input.epoch} is not collecting guardian signatures",
                                   type=SIGNATURES_CLOSED, non_retryable=True)
        try:
            peers.validate(req, self._registry, self._digest, self._signed)
        except SignatureRejected as err:
            raise ApplicationError(err.message, type=err.reason, non_retryable=True) from None

    @workflow.query
    def status(self) -> NetworkHaltStatus:
        return NetworkHaltStatus(epoch=self._input.epoch, halted=self._halted, reason=self._input.reason,
                                 digest=self._digest.hex(), guardians_required=self._k,
                                 signed_by=sorted(self._signed))
