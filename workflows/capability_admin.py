"""CapabilityAdminWorkflow: one signed administrative change to the capability state (register or remove a node,
peer, guardian or operator; mint; revoke; rotate or retire a root key; halt the network), applied by the worker
only if the signatures of those entitled to it verify over exactly this change (westworld/authority.py).

Workflow id ``capability-admin:<nonce>``: the id is part of what is signed and the worker records the nonce once
used, so a signature cannot be replayed on another change, another id, or the same id again. Refused: a
non-retryable ``Unauthorised`` naming what is missing. Accepted: applied once and audited (``capability.admin``).

CapabilityReadWorkflow (id ``capability-read:<anything>``) answers what anyone may read: the registries (public
keys only) and the halt. The CLI uses the two instead of opening the database.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from westworld import authority, keys
    from westworld.agents import (
        AdminAction,
        AdminApply,
        AdminOutcome,
        AdminResult,
        CapabilityAdminInput,
        CapabilityRegistries,
        NetworkHaltInput,
    )
    from westworld.audit import AuditReceipt
    from westworld.errors import UNAUTHORISED, Unauthorised
    from westworld.policy import NetworkPolicy
    from workflows.audit import append_audit
    from workflows.network_halt import NetworkHaltWorkflow
    from workflows.steps import set_step

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
ID_PREFIX = keys.ADMIN_ID_PREFIX


def admin_digest(inp: CapabilityAdminInput, workflow_id: str) -> bytes:
    """What the signers of ``inp.change`` sign, for the workflow ``workflow_id``."""
    return authority.change_digest(f"capability.{inp.change.action.value}", workflow_id,
                                   inp.change.model_dump(mode="json"), keys.admin_nonce(workflow_id),
                                   inp.signed.expires_at)


@workflow.defn
class CapabilityAdminWorkflow:
    @workflow.run
    async def run(self, inp: CapabilityAdminInput) -> AdminResult:
        wid = workflow.info().workflow_id
        c = inp.change
        set_step("checking signatures")
        policy = await workflow.execute_activity("load_policy", result_type=NetworkPolicy,
                                                 start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        signers = await workflow.execute_activity("admin_signers", result_type=authority.AdminSigners,
                                                  start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
        required = authority.registry_authority(c.action.registry, signers, policy)
        try:
            if not wid.startswith(ID_PREFIX) or len(wid) < len(ID_PREFIX) + 16:
                raise Unauthorised(f"{wid}: an admin change runs as {ID_PREFIX}<nonce of 16+ chars>")
            signed_by = authority.authorise(f"{c.action.value} {c.subject}".strip(), admin_digest(inp, wid),
                                            inp.signed, required, signers, workflow.now())
        except Unauthorised as err:
            raise ApplicationError(err.message, type=UNAUTHORISED, non_retryable=True) from None
        set_step(f"applying {c.action.value}")
        try:
            outcome = await workflow.execute_activity(
                "apply_admin_change", AdminApply(nonce=wid, change=c), result_type=AdminOutcome,
                start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK)
        except ActivityError as err:  # a refusal by the worker (nonce used, unknown id): the workflow's own type
            if isinstance(err.cause, ApplicationError):
                raise ApplicationError(err.cause.message, type=err.cause.type, non_retryable=True) from None
            raise
        if c.action is AdminAction.HALT:
            await workflow.start_child_workflow(
                NetworkHaltWorkflow.run, NetworkHaltInput(
                    epoch=outcome.halt_epoch, reason=c.reason or "halted by operator",
                    guardians_required=authority.guardians_k(policy, c.guardians_required)),
                id=keys.halt_id(outcome.halt_epoch), parent_close_policy=ParentClosePolicy.ABANDON)
        receipt: AuditReceipt = await append_audit("capability.admin", wid, {
                "action": c.action.value, "change": c.model_dump(mode="json", exclude_defaults=True),
                "signed_by": signed_by, "authority": required.describe(), "detail": outcome.detail,
                "expires_at": inp.signed.expires_at.isoformat()})
        set_step("done")
        return AdminResult(action=c.action, detail=outcome.detail, sealed_token=outcome.sealed_token,
                           halt_epoch=outcome.halt_epoch, signed_by=signed_by, audit_seq=receipt.seq)


@workflow.defn
class CapabilityReadWorkflow:
    @workflow.run
    async def run(self) -> CapabilityRegistries:
        found: CapabilityRegistries = await workflow.execute_activity(
            "capability_registries", result_type=CapabilityRegistries, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK)
        return found
