"""What `westworld agent` and `westworld halt` do, as async functions over the capability store and Temporal.

Local key material: root keys stay in the project database, encrypted under ``<data dir>/capability-kek.key``;
peer and guardian private keys are generated here into ``<data dir>/capabilities/keys/<id>.key`` (mode 0600) and
only their public keys are registered. Signatures are made here and only signatures travel to the server.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.capability_store import CapabilityStore
from activities.store import Database
from westworld import capability as cap
from westworld import discharge as dc
from westworld import peers
from westworld.agents import (
    AgentActionInput,
    AgentActionResult,
    AnomalyWatchInput,
    NetworkHaltInput,
    WatchConfigRequest,
    WatchSettings,
)
from westworld.errors import InvalidInput
from workers.capabilities_wiring import open_store
from workers.settings import Settings
from workflows.agent_action import AgentActionWorkflow
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.network_halt import NetworkHaltWorkflow

Echo = Callable[[str], None]
WATCH_ID = "anomaly-watch"


def now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def store_of(s: Settings) -> AsyncIterator[CapabilityStore]:
    db = Database(s.resolved_database_url)
    await db.init()
    try:
        yield await open_store(s, db)
    finally:
        await db.close()


def keys_dir(s: Settings) -> Path:
    return s.data_dir / "capabilities" / "keys"


def new_keypair(path: Path) -> str:
    """Generate an Ed25519 key into ``path`` (hex, mode 0600; refuses to overwrite); returns the public key hex."""
    if path.exists():
        raise InvalidInput(f"{path} exists; refusing to overwrite a private key")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.touch(mode=0o600)
    path.write_text(raw.hex())
    return peers.public_key_of(raw)


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


def inspect(token: str) -> list[str]:
    try:
        parsed = cap.parse_token(token)
    except cap.Denial as d:
        raise InvalidInput(f"token: {d.reason}") from None
    i = parsed.identity
    lines = [f"agent:    {i.agent_id}", f"token id: {i.token_id}", f"root key: {i.key_id}",
             f"epoch:    {i.epoch}", "caveats:"]
    lines += [f"  - {c.text}" for c in parsed.caveats]
    lines += [f"  - third-party: a discharge from peer {p}" for p in parsed.peers]
    return lines


async def attenuate(s: Settings, token: str, caveats: list[str], peer_ids: list[str]) -> str:
    out = cap.attenuate(token, caveats)
    if peer_ids:
        async with store_of(s) as store:
            registry = await store.peers()
        for pid in peer_ids:
            if pid not in registry:
                raise InvalidInput(f"peer {pid!r} is not registered (see `westworld agent peers list`)")
            out = dc.add_peer_caveat(out, pid, bytes.fromhex(registry[pid]), f"discharge for {pid}",
                                     secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(24),
                                     secrets.token_bytes(24))
    return out


async def start_action(client: Client, s: Settings, inp: AgentActionInput) -> str:
    handle = await client.start_workflow(
        AgentActionWorkflow.run, inp, id=f"agent-action:{inp.agent_id}:{inp.action_id}", task_queue=s.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return handle.id


async def await_action(client: Client, workflow_id: str) -> AgentActionResult:
    return await client.get_workflow_handle_for(AgentActionWorkflow.run, workflow_id).result()


def describe(result: AgentActionResult) -> str:
    if result.allowed:
        where = f"executed on {len(result.applied)} nodes" if result.executed else "decision only (no target given)"
        peers_txt = f", signed by peers {result.peers}" if result.peers else ""
        return f"allowed: {where}{peers_txt} (audit #{result.audit_seq})"
    return f"denied by caveat [{result.caveat}]: {result.reason} (audit #{result.audit_seq})"


async def sign_action(client: Client, workflow_id: str, signer: str, key: bytes) -> int:
    handle = client.get_workflow_handle_for(AgentActionWorkflow.run, workflow_id)
    status = await handle.query(AgentActionWorkflow.status)
    return await _submit(handle.execute_update(AgentActionWorkflow.submit_peer_signature, peers.SignatureRequest(
        signer_id=signer, signature=peers.sign(key, bytes.fromhex(status.digest)))))


async def sign_resume(client: Client, epoch: int, guardian: str, key: bytes) -> int:
    handle = client.get_workflow_handle_for(NetworkHaltWorkflow.run, f"halt:{epoch}")
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


async def start_halt(client: Client, s: Settings, reason: str, guardians_required: int) -> int:
    async with store_of(s) as store:
        epoch = await store.allocate_halt(f"cli:{uuid.uuid4().hex}", reason)
    await client.start_workflow(NetworkHaltWorkflow.run, NetworkHaltInput(
        epoch=epoch, reason=reason, guardians_required=guardians_required), id=f"halt:{epoch}",
        task_queue=s.task_queue)
    return epoch


async def watch_running(client: Client) -> bool:
    """Whether the network's anomaly watch runs (asks the server only: no worker needed)."""
    try:
        desc = await client.get_workflow_handle_for(AnomalyWatchWorkflow.run, WATCH_ID).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return desc.status is WorkflowExecutionStatus.RUNNING


async def ensure_watch(client: Client, s: Settings, inp: AnomalyWatchInput) -> str:
    """Start the network's anomaly watch unless it is running (a closed one is started afresh)."""
    if await watch_running(client):
        return "already running"
    try:
        await client.start_workflow(AnomalyWatchWorkflow.run, inp, id=WATCH_ID, task_queue=s.task_queue,
                                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    except WorkflowAlreadyStartedError:
        return "already running"  # started by someone else between the two calls
    return "started"


async def sync_watch(client: Client, s: Settings, echo: Echo) -> None:
    """What `westworld up` does for the watch: start it with the production defaults unless it runs or the
    ``anomaly_watch`` setting is off."""
    if not s.anomaly_watch:
        state = "running" if await watch_running(client) else "not running"
        echo(f"{'anomaly-watch':13} off by setting  (WESTWORLD_ANOMALY_WATCH=false; {state}; "
             f"`westworld agent watch` starts it)")
        return
    default = AnomalyWatchInput()
    outcome = await ensure_watch(client, s, default)
    what = (f" (default thresholds, polls every {default.poll_interval.total_seconds():g} s)"
            if outcome == "started" else "")
    echo(f"{'anomaly-watch':13} {outcome:16} workflow {WATCH_ID}{what}")


async def reconfigure_watch(client: Client, request: WatchConfigRequest) -> WatchSettings:
    """Change the running watch's settings (validated and audited by the watch); returns the settings replaced."""
    handle = client.get_workflow_handle_for(AnomalyWatchWorkflow.run, WATCH_ID)
    try:
        return await handle.execute_update(AnomalyWatchWorkflow.reconfigure, request)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise InvalidInput(cause.message if isinstance(cause, ApplicationError) else str(cause)) from err
