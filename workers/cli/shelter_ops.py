"""What `westworld shelter ...` does against the stack: start requests and rotations, answer as a guardian,
open a granted document locally. Key material stays in this process (read from the party's 0600 key file)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from activities.policy import read_policy_file
from activities.shelter_docs import stage_document
from westworld.errors import Refused
from westworld.keys import access_candidates, access_id, key_ceremony_id, proposal_of, rotation_id
from westworld.keys import document_id as document_workflow_id
from westworld.policy import NetworkPolicy
from westworld.rotation import AckTask, GuardianRotationInput, RotationPhase, RotationResult, RotationState
from westworld.shelter import (
    CeremonyApproval,
    CreateEpochInput,
    Guardian,
    KeyEpoch,
    Network,
    StoreDocumentInput,
    StoreDocumentState,
    ceremony_digest,
)
from westworld.shelter_access import (
    AccessDecision,
    AccessRequest,
    AccessResult,
    AccessState,
    DocumentAccessInput,
    EmergencyAccessInput,
    ShareTask,
    VoteTerms,
    access_terms,
    reconstruct_master_key,
)
from westworld.vote import DaoVoteStatus, VoteKind, VoteState
from workers.cli.shelter_keys import PartyKeys, acknowledge, answer_share
from workers.settings import Settings
from workflows.document_access import DocumentAccessWorkflow
from workflows.emergency_access import EmergencyAccessWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow
from workflows.key_ceremony import KeyCeremonyWorkflow
from workflows.steps import STEP
from workflows.store_document import StoreDocumentWorkflow

Echo = Callable[[str], None]
SHARE_WORKFLOWS = ("DocumentAccessWorkflow", "EmergencyAccessWorkflow", "GuardianRotationWorkflow")


def request_id_for(document_id: str) -> str:
    return f"{document_id[:38]}-{secrets.token_hex(4)}".lower()


async def init_guardians(client: Client, s: Settings, guardians: list[Guardian], threshold: int,
                         approvers: list[PartyKeys] | None = None) -> KeyEpoch:
    """Run a key ceremony. The genesis one needs no approvers; once an epoch exists, k of its guardians must sign
    the ceremony (``approvers``: their key files; signatures by anyone else do not count)."""
    key = f"ceremony-{uuid.uuid4().hex[:12]}"
    digest = ceremony_digest(guardians, threshold, key)
    inp = CreateEpochInput(guardians=guardians, threshold=threshold, epoch_key=key, approvals=[
        CeremonyApproval(guardian_id=a.id, signature=a.sign(digest)) for a in approvers or []])
    try:
        epoch: KeyEpoch = await client.execute_workflow(
            KeyCeremonyWorkflow.run, inp, id=key_ceremony_id(key), task_queue=s.task_queue)
    except WorkflowFailureError as err:
        cause = err.cause
        raise Refused(f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else
                           f"key ceremony {key} failed: {cause}") from err
    return epoch


async def store_document(client: Client, s: Settings, document_id: str, title: str, plaintext: bytes,
                         networks: list[Network] | None = None) -> StoreDocumentState:
    """Stage the plaintext (0600, read and deleted by the encrypt activity) and run StoreDocumentWorkflow."""
    inp = StoreDocumentInput(document_id=document_id, title=title,
                             **({"networks": networks} if networks else {}))
    stage_document(s.data_dir, document_id, plaintext)
    try:
        return await client.execute_workflow(StoreDocumentWorkflow.run, inp, id=document_workflow_id(document_id),
                                             task_queue=s.task_queue,
                                             id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowFailureError as err:
        raise Refused(f"storing {document_id} failed: {err.cause}") from err


def local_policy(s: Settings) -> NetworkPolicy:
    """The policy file this installation points at (``settings.policy_file``), for early refusals; the worker
    enforces it only if its hash is the one on chain, and refuses the same requests again itself."""
    try:
        return read_policy_file(s.policy_file)
    except ValueError as err:
        raise Refused(str(err)) from err


def access_input(s: Settings, request: AccessRequest, *, emergency: bool,
                 vote: VoteTerms | None = None) -> tuple[str, DocumentAccessInput | EmergencyAccessInput]:
    """The workflow id and input of an access request, its terms checked against the network policy: looser
    raises the same ``LooserThanPolicy`` refusal (a ``WestworldError``) the workflow would fail with."""
    terms = vote or VoteTerms()
    if emergency:
        wf_id = access_id(request.request_id, emergency=True)
        urgent = EmergencyAccessInput(request=request, vote=terms)
        access_terms(local_policy(s), wf_id, terms, VoteKind.EMERGENCY, reminder_every=urgent.reminder_every,
                     window=urgent.window)
        return wf_id, urgent
    wf_id = access_id(request.request_id)
    normal = DocumentAccessInput(request=request, vote=terms)
    access_terms(local_policy(s), wf_id, terms, VoteKind.NORMAL, reminder_every=normal.reminder_every,
                 share_window=normal.share_window)
    return wf_id, normal


async def start_access(client: Client, s: Settings, request: AccessRequest, *, emergency: bool,
                       vote: VoteTerms | None = None) -> str:
    """Start an access request; terms looser than the network policy are refused before anything is started."""
    wf_id, inp = access_input(s, request, emergency=emergency, vote=vote)
    if isinstance(inp, EmergencyAccessInput):
        await client.start_workflow(EmergencyAccessWorkflow.run, inp, id=wf_id, task_queue=s.task_queue,
                                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    else:
        await client.start_workflow(DocumentAccessWorkflow.run, inp, id=wf_id, task_queue=s.task_queue,
                                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return wf_id


async def resolve(client: Client, ref: str) -> WorkflowHandle[Any, Any]:
    """A request/rotation by workflow id (``access:…``, ``emergency:…``, ``rotation:…``) or bare request id."""
    candidates = access_candidates(ref)
    for wf_id in candidates:
        handle = client.get_workflow_handle(wf_id)
        try:
            await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        return handle
    raise Refused(f"no request or rotation {ref!r} (looked for {', '.join(candidates)})")


@dataclass
class PendingItem:
    workflow_id: str
    kind: str
    what: str
    detail: str = ""


PENDING_QUERY_TIMEOUT = timedelta(seconds=10)  # per workflow: a worker that is gone must not hang the list


async def pending_for(client: Client, keys: PartyKeys) -> list[PendingItem]:
    """Running requests and rotations that wait for this guardian's share or acknowledgement."""
    types = " OR ".join(f'WorkflowType = "{t}"' for t in SHARE_WORKFLOWS)
    items: list[PendingItem] = []
    async for wf in client.list_workflows(f'ExecutionStatus = "Running" AND ({types})'):
        handle = client.get_workflow_handle(wf.id)
        try:
            task = await handle.query("share_task", keys.id, result_type=ShareTask | None,  # type: ignore[arg-type]
                                      rpc_timeout=PENDING_QUERY_TIMEOUT)
        except RPCError as err:  # one workflow whose worker is down (or gone) must not hide the others
            items.append(PendingItem(wf.id, wf.workflow_type or "?", "unreachable", f"cannot be asked now: {err}"))
            continue
        if task is not None and not task.submitted:
            detail = ""
            if wf.workflow_type == "GuardianRotationWorkflow":  # what a share handed in here approves
                st = await handle.query("status", result_type=RotationState)
                detail = (f"moves the key to {', '.join(st.new_guardians)} ({st.threshold}-of-"
                          f"{len(st.new_guardians)}){'; DAO vote ' + st.vote_id if st.vote_id else ''}")
            items.append(PendingItem(wf.id, wf.workflow_type or "?", "share", detail))
        if wf.workflow_type == "GuardianRotationWorkflow":
            ack = await handle.query("ack_task", keys.id, result_type=AckTask | None)  # type: ignore[arg-type]
            if ack is not None and not ack.acknowledged:
                items.append(PendingItem(wf.id, wf.workflow_type, "acknowledgement"))
    return items


async def submit_share(client: Client, ref: str, keys: PartyKeys) -> tuple[str, int]:
    handle = await resolve(client, ref)
    task = await handle.query("share_task", keys.id, result_type=ShareTask | None)  # type: ignore[arg-type]
    if task is None:
        step = (await handle.describe()).typed_search_attributes.get(STEP) or "?"
        raise Refused(f"{handle.id} asks no share of {keys.id!r} now (step: {step}); either {keys.id!r} is "
                           "not a guardian of its key epoch, or it is not collecting shares yet or any more")
    if task.submitted:
        raise Refused(f"{keys.id!r} already submitted a share to {handle.id}")
    submission = answer_share(keys, task)
    try:
        count: int = await handle.execute_update("submit_share", submission, result_type=int)
    except WorkflowUpdateFailedError as err:
        raise Refused(explain(err)) from err
    return handle.id, count


async def submit_ack(client: Client, ref: str, keys: PartyKeys) -> tuple[str, int]:
    handle = await resolve(client, ref)
    task = await handle.query("ack_task", keys.id, result_type=AckTask | None)  # type: ignore[arg-type]
    if task is None:
        raise Refused(f"{handle.id} has no new share for {keys.id!r} (not in the new set, or not resharded yet)")
    try:
        count: int = await handle.execute_update("acknowledge", acknowledge(keys, task), result_type=int)
    except WorkflowUpdateFailedError as err:
        raise Refused(explain(err)) from err
    return handle.id, count


def explain(err: BaseException) -> str:
    cause = err.cause if isinstance(err, WorkflowUpdateFailedError) else err
    if isinstance(cause, ApplicationError):
        return f"refused ({cause.type}): {cause.message}"
    return f"refused: {err}"


async def access_result(client: Client, ref: str) -> tuple[str, AccessResult]:
    handle = await resolve(client, ref)
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.RUNNING:
        state = await handle.query("status", result_type=AccessState)
        raise Refused(f"{handle.id} is still running ({state.step}); shares in: {len(state.submitted)}/"
                           f"{state.threshold or '?'}")
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        raise Refused(f"{await ended_without_result(handle, desc.status)}; nothing to open")
    result = await client.get_workflow_handle(handle.id, result_type=AccessResult).result()
    return handle.id, result


async def access_result_when_done(client: Client, ref: str, timeout: float = 120.0) -> tuple[str, AccessResult]:
    handle = await resolve(client, ref)
    result = await asyncio.wait_for(client.get_workflow_handle(handle.id, result_type=AccessResult).result(),
                                    timeout)
    return handle.id, result


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise Refused(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_collecting(client: Client, wf_id: str) -> None:
    """Until the request takes shares (after approval for a normal access; at once for an emergency)."""
    async def ready() -> bool:
        st = await client.get_workflow_handle(wf_id).query("status", result_type=AccessState)
        return st.decision is AccessDecision.COLLECTING

    await _until(ready, f"{wf_id} to collect shares")


async def wait_vote_open(client: Client, vote_id: str) -> None:
    """Until the child vote of a request is open for ballots."""
    async def ready() -> bool:
        try:
            st = await client.get_workflow_handle(vote_id).query("status", result_type=DaoVoteStatus)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return st.state is VoteState.OPEN

    await _until(ready, f"{vote_id} to open")


async def wait_rotation(client: Client, wf_id: str, phase: RotationPhase) -> None:
    """Until a rotation reaches ``phase`` (collecting shares after planning; acknowledging after re-splitting)."""
    async def ready() -> bool:
        st = await client.get_workflow_handle(wf_id).query("status", result_type=RotationState)
        return st.phase is phase

    await _until(ready, f"{wf_id} to reach {phase.value}")


async def rotation_vote(client: Client, wf_id: str) -> str | None:
    """The DAO vote a rotation to a new guardian set waits for (proposal id), or None once it collects shares
    without one (the same guardians get fresh shares)."""
    found: list[str | None] = []

    async def ready() -> bool:
        st = await client.get_workflow_handle(wf_id).query("status", result_type=RotationState)
        if st.vote_id is not None or st.phase is RotationPhase.COLLECTING:
            found.append(proposal_of(st.vote_id) if st.vote_id else None)
            return True
        return False

    await _until(ready, f"{wf_id} to plan")
    return found[0]


def reconstruct(keys: PartyKeys, workflow_id: str, result: AccessResult) -> bytes:
    return reconstruct_master_key(keys.x25519, result, workflow_id)


async def start_rotation(client: Client, s: Settings, inp: GuardianRotationInput, current_epoch: int) -> str:
    wf_id = rotation_id(current_epoch)
    # one running rotation per epoch; after an abandoned one (too few guardians) the same id starts afresh
    await client.start_workflow(GuardianRotationWorkflow.run, inp, id=wf_id, task_queue=s.task_queue,
                                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    return wf_id


def failure_reason(err: BaseException | None) -> str:
    """Why a run ended without a result, from its failure chain: the typed application error at its root
    (a refusal by policy, an activity's permanent error), or how it was terminated, cancelled or timed out."""
    while isinstance(err, WorkflowFailureError | ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    if isinstance(err, ApplicationError):
        return f"({err.type}) {err.message}" if err.type else err.message
    if isinstance(err, TerminatedError):
        return f"terminated: {err.message}"
    if isinstance(err, CancelledError):
        return "cancelled"
    if isinstance(err, TemporalTimeoutError):
        return f"timed out ({err.type.name.lower() if err.type else 'timeout'})"
    return str(err) if err is not None else "no reason recorded"


async def ended_without_result(handle: WorkflowHandle[Any, Any], status: WorkflowExecutionStatus | None) -> str:
    """``<id>: failed: <reason>`` for a run that failed, was terminated, cancelled or timed out."""
    try:
        await handle.result()
    except WorkflowFailureError as err:
        reason = failure_reason(err)
    else:
        reason = "no reason recorded"
    return f"{handle.id}: {status.name.lower() if status else 'ended'}: {reason}"


async def describe(client: Client, ref: str) -> str:
    handle = await resolve(client, ref)
    desc = await handle.describe()
    running = desc.status == WorkflowExecutionStatus.RUNNING
    if desc.status not in {WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED}:
        return await ended_without_result(handle, desc.status)
    if desc.workflow_type == "GuardianRotationWorkflow":
        if not running:
            r = await client.get_workflow_handle(handle.id, result_type=RotationResult).result()
            return f"{handle.id}: {r.phase.value}: {r.reason}"
        st = await handle.query("status", result_type=RotationState)
        vote = f"; DAO vote {st.vote_id}: {st.vote_decision or 'open'}" if st.vote_id else ""
        return (f"{handle.id}: {st.step}{vote}; new guardians {', '.join(st.new_guardians) or '-'} "
                f"({st.threshold or '?'}-of-{len(st.new_guardians) or '?'}); shares from {st.shares_in or 'nobody'}; "
                f"acknowledged by {st.acknowledged or 'nobody'}; waiting for {', '.join(st.waiting_for) or 'nobody'}")
    if not running:
        res = (await access_result(client, handle.id))[1]
        return f"{handle.id}: {res.decision.value}: {res.reason} (audit #{res.audit_seq})"
    a = await handle.query("status", result_type=AccessState)
    return (f"{handle.id}: {a.step}; vote {a.vote_decision or 'open'}; shares from {a.submitted or 'nobody'}; "
            f"deadline {a.deadline.isoformat() if a.deadline else '-'}")


async def describe_document(client: Client, ref: str) -> dict[str, Any]:
    """What `shelter status --json` prints: the request's or rotation's live state, or its result once done."""
    handle = await resolve(client, ref)
    desc = await handle.describe()
    status = desc.status.name.lower() if desc.status else "unknown"
    doc: dict[str, Any] = {"workflow_id": handle.id, "workflow_type": desc.workflow_type, "status": status}
    rotation = desc.workflow_type == "GuardianRotationWorkflow"
    if desc.status == WorkflowExecutionStatus.RUNNING:
        doc["state"] = await handle.query("status", result_type=RotationState if rotation else AccessState)
    elif desc.status == WorkflowExecutionStatus.COMPLETED:
        doc["result"] = await client.get_workflow_handle(
            handle.id, result_type=RotationResult if rotation else AccessResult).result()
    else:
        doc["reason"] = (await ended_without_result(handle, desc.status)).split(": ", 2)[-1]
    return doc
