"""What `westworld up` ensures besides processes: the genesis operator key and the standing workflows (the anomaly
watch, the charter sync). The CLI's `agent` commands use the same functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from westworld import peers
from westworld.agents import AnomalyWatchInput
from westworld.charter_sync import CharterSyncInput
from westworld.errors import InvalidInput
from westworld.keys import CHARTER_SYNC_ID, WATCH_ID
from workers.settings import Settings
from workers.wiring.capabilities import operator_key_file, operator_public_file
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.charter_sync import CharterSyncWorkflow

Echo = Callable[[str], None]


def ensure_operator_key(s: Settings) -> str | None:
    """What `westworld up` does once: the genesis operator's key pair (``operator.key`` mode 0600, held by the
    person who runs the stack; ``operator.pub``, read by the worker). Returns the new public key, or None."""
    if operator_key_file(s).exists():
        return None
    public = new_keypair(operator_key_file(s))
    operator_public_file(s).write_text(public + "\n")
    return public


def new_keypair(path: Path) -> str:
    """Generate an Ed25519 key into ``path`` (hex, mode 0600; refuses to overwrite); returns the public key hex."""
    if path.exists():
        raise InvalidInput(f"{path} exists; refusing to overwrite a private key")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.touch(mode=0o600)
    path.write_text(raw.hex())
    return peers.public_key_of(raw)


async def watch_running(client: Client) -> bool:
    """Whether the network's anomaly watch runs (asks the server only: no worker needed)."""
    try:
        desc = await client.get_workflow_handle(WATCH_ID).describe()
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


async def charter_sync_running(client: Client) -> bool:
    """Whether the charter sync runs (asks the server only)."""
    try:
        desc = await client.get_workflow_handle(CHARTER_SYNC_ID).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return desc.status is WorkflowExecutionStatus.RUNNING


async def sync_charter(client: Client, s: Settings, echo: Echo) -> None:
    """What `westworld up` does for the charter: start CharterSyncWorkflow unless it runs (a closed one afresh)."""
    outcome = "already running"
    if not await charter_sync_running(client):
        try:
            await client.start_workflow(CharterSyncWorkflow.run, CharterSyncInput(), id=CHARTER_SYNC_ID,
                                        task_queue=s.task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
            outcome = "started"
        except WorkflowAlreadyStartedError:
            pass
    echo(f"{'charter-sync':13} {outcome:16} workflow {CHARTER_SYNC_ID} (puts the on-chain charter "
         f"{s.charter_file.name} in force at the gate, kernel and scrape)")
