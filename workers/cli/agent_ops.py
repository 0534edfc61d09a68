"""What `westworld agent` and `westworld halt` do, as async functions over Temporal: the CLI is a client.

It never opens the project database or a worker's keys. Changes go to the worker as signed requests
(CapabilityAdminWorkflow, the watch's ``reconfigure`` / ``stop`` updates) that the workflow checks
(westworld/authority.py); reads go through CapabilityReadWorkflow. The private keys of people (operator, peers,
guardians) are files the person holds, passed with ``--key``: signatures are made here and only signatures
travel. ``store_of`` is for the demos that run beside the worker, never for a CLI command.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from westworld import authority, peers
from westworld import capability as cap
from westworld import discharge as dc
from westworld.agents import (
    AdminAction,
    AdminChange,
    AdminResult,
    AgentActionInput,
    AgentActionResult,
    AnomalyWatchInput,
    CapabilityAdminInput,
    CapabilityRegistries,
    WatchConfigRequest,
    WatchSettings,
    WatchStopRequest,
)
from westworld.errors import UNAUTHORISED, Denial, InvalidInput, Refused
from westworld.keys import WATCH_ID, admin_id, agent_action_id, capability_read_id, halt_id
from workers.settings import Settings
from workflows.agent_action import AgentActionWorkflow
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.capability_admin import CapabilityAdminWorkflow, CapabilityReadWorkflow, admin_digest
from workflows.network_halt import NetworkHaltWorkflow

Echo = Callable[[str], None]
SIGNATURE_LIFETIME = timedelta(minutes=10)


def now() -> datetime:
    return datetime.now(UTC)



def keys_dir(s: Settings) -> Path:
    """Where the demos keep their people's keys (a CLI user passes their own key files with --key)."""
    return s.data_dir / "capabilities" / "keys"


def read_private_key(path: Path) -> bytes:
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read the key ({err.strerror})") from err
    except ValueError as err:
        raise InvalidInput(f"{path}: not a hex Ed25519 private key") from err
    if len(raw) != 32:
        raise InvalidInput(f"{path}: an Ed25519 private key is 32 bytes, this one is {len(raw)}")
    return raw


def read_token(value: str) -> str:
    """A token given inline or as a file path (surrounding whitespace of a file is ignored)."""
    path = Path(value)
    if len(value) < 4096 and path.exists():
        return path.read_text().strip()
    return value.strip()


def token_summary(token: str) -> dict[str, Any]:
    """What `agent inspect --json` prints of a token (never the token itself)."""
    try:
        parsed = cap.parse_token(token)
    except Denial as d:
        raise InvalidInput(f"token: {d.reason}") from None
    i = parsed.identity
    return {"agent_id": i.agent_id, "token_id": i.token_id, "key_id": i.key_id, "epoch": i.epoch,
            "caveats": [c.text for c in parsed.caveats], "discharges_from": list(parsed.peers)}


def inspect(token: str) -> list[str]:
    t = token_summary(token)
    lines = [f"agent:    {t['agent_id']}", f"token id: {t['token_id']}", f"root key: {t['key_id']}",
             f"epoch:    {t['epoch']}", "caveats:"]
    lines += [f"  - {c}" for c in t["caveats"]]
    lines += [f"  - third-party: a discharge from peer {p}" for p in t["discharges_from"]]
    return lines


async def attenuate(s: Settings, token: str, caveats: list[str], peer_ids: list[str]) -> str:
    out = cap.attenuate(token, caveats)
    if peer_ids:
        from workers.client import connect

        registry = (await registries(await connect(s), s)).peers
        for pid in peer_ids:
            if pid not in registry:
                raise InvalidInput(f"peer {pid!r} is not registered (see `westworld agent peers list`)")
            out = dc.add_peer_caveat(out, pid, bytes.fromhex(registry[pid]), f"discharge for {pid}",
                                     secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(24),
                                     secrets.token_bytes(24))
    return out


async def start_action(client: Client, s: Settings, inp: AgentActionInput) -> str:
    handle = await client.start_workflow(
        AgentActionWorkflow.run, inp, id=agent_action_id(inp.agent_id, inp.action_id), task_queue=s.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return handle.id


async def await_action(client: Client, workflow_id: str) -> AgentActionResult:
    result: AgentActionResult = await client.get_workflow_handle(workflow_id, result_type=AgentActionResult).result()
    return result


def describe(result: AgentActionResult) -> str:
    if result.allowed:
        where = f"executed on {len(result.applied)} nodes" if result.executed else "decision only (no target given)"
        peers_txt = f", signed by peers {result.peers}" if result.peers else ""
        return f"allowed: {where}{peers_txt} (audit #{result.audit_seq})"
    return f"denied by caveat [{result.caveat}]: {result.reason} (audit #{result.audit_seq})"


async def sign_action(client: Client, workflow_id: str, signer: str, key: bytes) -> int:
    handle = client.get_workflow_handle(workflow_id, result_type=AgentActionResult)
    status = await handle.query(AgentActionWorkflow.status)
    return await _submit(handle.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
        signer_id=signer, signature=peers.sign(key, bytes.fromhex(status.digest)))))


async def sign_resume(client: Client, epoch: int, guardian: str, key: bytes) -> int:
    handle = client.get_workflow_handle(halt_id(epoch))
    status = await handle.query(NetworkHaltWorkflow.status)
    return await _submit(handle.execute_update(NetworkHaltWorkflow.submit_guardian_signature, peers.SignatureRequest(
        signer_id=guardian, signature=peers.sign(key, bytes.fromhex(status.digest)))))


async def _submit(call: object) -> int:
    try:
        return int(await call)  # type: ignore[misc]
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        why = f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else str(cause)
        raise InvalidInput(f"signature refused ({why})") from err


async def registries(client: Client, s: Settings) -> CapabilityRegistries:
    """The registries (public keys only), the halt, the active root key: read by the worker."""
    return await client.execute_workflow(CapabilityReadWorkflow.run, id=capability_read_id(uuid.uuid4().hex),
                                         task_queue=s.task_queue)


def signed_input(change: AdminChange, keys: Sequence[bytes], nonce: str | None = None,
                 lifetime: timedelta = SIGNATURE_LIFETIME) -> tuple[str, CapabilityAdminInput]:
    """The workflow id and the input of ``change`` signed with ``keys`` (locally)."""
    if not keys:
        raise InvalidInput(f"{change.action.value}: needs --key (the signer's private key file)")
    wid = admin_id(nonce or secrets.token_hex(16))
    expires = now() + lifetime
    draft = CapabilityAdminInput(change=change, signed=authority.SignedBy(
        expires_at=expires, signatures=[authority.AdminSignature(signer="0" * 64, signature="0" * 128)]))
    digest = admin_digest(draft, wid)
    return wid, draft.model_copy(update={"signed": authority.SignedBy(
        expires_at=expires, signatures=[authority.sign(k, digest) for k in keys])})


async def admin(client: Client, s: Settings, change: AdminChange, keys: Sequence[bytes]) -> AdminResult:
    """Send ``change`` signed with ``keys``; the worker applies it if the signers are entitled to it."""
    wid, inp = signed_input(change, keys)
    try:
        return await client.execute_workflow(CapabilityAdminWorkflow.run, inp, id=wid, task_queue=s.task_queue,
                                             id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            raise Refused(f"{change.action.value} refused ({cause.type}: {cause.message})",
                          type=cause.type or UNAUTHORISED) from err
        raise


async def mint(client: Client, s: Settings, agent: str, actions: Sequence[str], keys: Sequence[bytes]) -> str:
    """A new root token for ``agent``, minted by the worker on the operator's signed request and sealed to a key
    made here for this call: the token never travels, nor sits in history, in clear."""
    from nacl.public import PrivateKey, SealedBox

    mine = PrivateKey.generate()
    result = await admin(client, s, AdminChange(action=AdminAction.MINT, subject=agent, actions=list(actions),
                                                recipient_key=bytes(mine.public_key).hex()), keys)
    return SealedBox(mine).decrypt(bytes.fromhex(result.sealed_token)).decode()


async def start_halt(client: Client, s: Settings, reason: str, guardians_required: int,
                     keys: Sequence[bytes]) -> int:
    """Halt the network on an operator's signed request; returns the halt epoch."""
    result = await admin(client, s, AdminChange(action=AdminAction.HALT, reason=reason,
                                                guardians_required=guardians_required), keys)
    return result.halt_epoch


def sign_watch_start(inp: AnomalyWatchInput, keys: Sequence[bytes], watch_id: str = WATCH_ID,
                     lifetime: timedelta = SIGNATURE_LIFETIME) -> AnomalyWatchInput:
    """``inp`` signed by an operator: needed when its settings are stricter than the defaults."""
    expires = now() + lifetime
    digest = authority.change_digest("watch.start", watch_id, inp.change(), "start", expires)
    return inp.model_copy(update={"signed": authority.SignedBy(
        expires_at=expires, signatures=[authority.sign(k, digest) for k in keys])})


def sign_watch_change(request: WatchConfigRequest | WatchStopRequest, action: str, watch_id: str,
                      keys: Sequence[bytes], lifetime: timedelta = SIGNATURE_LIFETIME) -> None:
    """Sign ``request`` (at its ``seq``) for the watch ``watch_id`` with ``keys``, in place."""
    expires = now() + lifetime
    digest = authority.change_digest(action, watch_id, request.change(), str(request.seq), expires)
    request.signed = authority.SignedBy(expires_at=expires, signatures=[authority.sign(k, digest) for k in keys])


async def reconfigure_watch(client: Client, settings: WatchSettings, reason: str, keys: Sequence[bytes],
                            watch_id: str = WATCH_ID) -> WatchSettings:
    """Change the running watch's settings, signed with ``keys`` (one operator tightens; k guardians loosen,
    never beyond the policy); returns the settings replaced."""
    handle = client.get_workflow_handle(watch_id)
    seq = (await handle.query(AnomalyWatchWorkflow.status)).admin_seq
    request = WatchConfigRequest(**settings.model_dump(), reason=reason, seq=seq)
    sign_watch_change(request, "watch.reconfigure", watch_id, keys)
    try:
        return await handle.execute_update(AnomalyWatchWorkflow.reconfigure, request)
    except WorkflowUpdateFailedError as err:
        raise _refused("reconfigure", err) from err


async def stop_watch(client: Client, reason: str, keys: Sequence[bytes], watch_id: str = WATCH_ID) -> int:
    """Stop the network's watch (k guardians sign)."""
    handle = client.get_workflow_handle(watch_id)
    request = WatchStopRequest(reason=reason, seq=(await handle.query(AnomalyWatchWorkflow.status)).admin_seq)
    sign_watch_change(request, "watch.stop", watch_id, keys)
    try:
        return await handle.execute_update(AnomalyWatchWorkflow.stop, request)
    except WorkflowUpdateFailedError as err:
        raise _refused("stop", err) from err


def _refused(what: str, err: WorkflowUpdateFailedError) -> Refused:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return Refused(f"{what} refused ({cause.type}: {cause.message})", type=cause.type or UNAUTHORISED)
    return Refused(f"{what} refused ({cause})", type=UNAUTHORISED)
