"""What the `westworld agent` and `westworld halt` sub-commands share: running a coroutine with errors shown
as one line, the Temporal client, reading and writing a token (never echoing one), and sealing a token to the
workers for the one workflow input it may authorise (westworld/sealed.py).

The CLI is a client: the workers' public sealing key and peers' public keys come from
``CapabilityDirectoryWorkflow``; the token is sealed here and only the sealed box travels.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from westworld import capability as cap
from westworld import discharge as dc
from westworld import sealed as sl
from westworld.agents import AgentActionInput, CapabilityDirectory, DirectoryRequest
from westworld.errors import InvalidInput, PermanentError, WestworldError
from westworld.experiment import load_spec, parse_spec
from westworld.experiment_run import ExperimentInput
from westworld.keys import canary_id, capability_directory_id, experiment_id
from westworld.rollout import CanaryInput
from workers.cli.common import EXIT_NO, fail, fail_for
from workers.client import connect
from workers.settings import Settings
from workflows.agent_action import AgentActionWorkflow
from workflows.capability_directory import CapabilityDirectoryWorkflow

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
EXIT_DENIED = EXIT_NO  # `agent act`: the capability check (or the peers) denied the action
MAX_TOKEN_FILE = 1 << 20


def run(work: Awaitable[T]) -> T:
    """Run ``work``; a user-caused or connection failure exits with one red line saying what is wrong."""
    try:
        return asyncio.run(guarded(work))
    except WestworldError as err:  # a refusal, the stack not set up here or down, a bad input
        raise fail_for(err) from err
    except WorkflowAlreadyStartedError as err:
        raise fail(f"{err.workflow_id} already exists: pick another action id") from err
    except ValidationError as err:
        raise fail(f"ValidationError: {safe_errors(err)}") from err
    except RPCError as err:
        raise fail(f"{type(err).__name__}: {err}") from err


def safe_errors(err: ValidationError) -> str:
    """A validation error's locations and messages without the values (an input may hold a token)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}" for e in err.errors())


def read_token(value: str, what: str = "token") -> str:
    """A token given inline, or the path of a file holding it. A value that is not an existing file is the token
    itself (never an error naming it: the value is a credential)."""
    text = value.strip()
    try:
        path = Path(text)
        is_file = path.is_file()
    except (OSError, ValueError):  # e.g. a long inline token is no valid file name
        is_file = False
    if not is_file:
        if not text:
            raise InvalidInput(f"{what}: empty")
        return text
    try:
        if path.stat().st_size > MAX_TOKEN_FILE:
            raise InvalidInput(f"{what}: {path} is larger than {MAX_TOKEN_FILE} bytes; not a token file")
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{what}: cannot read {path} ({type(err).__name__})") from None
    if not token:
        raise InvalidInput(f"{what}: {path} is empty")
    return token


async def directory(client: Client, s: Settings, peers: Sequence[str] = ()) -> CapabilityDirectory:
    """The workers' sealing key (and the named peers' public keys), asked of the workers through Temporal."""
    return await client.execute_workflow(
        CapabilityDirectoryWorkflow.run, DirectoryRequest(peers=list(peers)),
        id=capability_directory_id(uuid.uuid4().hex), task_queue=s.task_queue)


def seal_input(inp: M, field: str, token: str, key: CapabilityDirectory, workflow_type: str,
               workflow_id: str) -> M:
    """``inp`` with ``field`` set to ``token`` sealed for ``workflow_type`` ``workflow_id`` and this input."""
    binding = sl.Binding(workflow_type=workflow_type, workflow_id=workflow_id,
                         input_digest=sl.input_digest(inp, field))
    box = sl.seal(token, binding, key.sealing_key.key_id, bytes.fromhex(key.sealing_key.public_key),
                  secrets.token_bytes(32), secrets.token_bytes(24))
    return inp.model_copy(update={field: box})


def seal_action(inp: AgentActionInput, token: str, key: CapabilityDirectory) -> AgentActionInput:
    """The agent action with its token sealed for its workflow id (``agent-action:<agent>:<action id>``)."""
    return seal_input(inp, "token", token, key, "AgentActionWorkflow", inp.workflow_id)


async def start_sealed_action(client: Client, s: Settings, inp: AgentActionInput, token: str,
                              key: CapabilityDirectory | None = None) -> str:
    """Seal ``token`` for ``inp`` and start the action (a duplicate action id is refused); returns its id."""
    sealed = seal_action(inp, token, key or await directory(client, s))
    handle = await client.start_workflow(
        AgentActionWorkflow.run, sealed, id=sealed.workflow_id, task_queue=s.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    return handle.id


async def guarded(work: Awaitable[T]) -> T:
    return await work


async def client(s: Settings) -> Client:
    return await connect(s)


def emit(token: str, out: Path | None) -> None:
    """Print the token, or write it to ``out`` readable by its owner only (a token is a bearer credential)."""
    if out is None:
        typer.echo(token)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    typer.echo(f"token written to {out}")


def token_arg(value: str, option: str = "token") -> str:
    """:func:`read_token` for a command's argument: a bad one is the error exit, naming the option only."""
    try:
        return read_token(value, option)
    except InvalidInput as err:
        raise fail(err.message) from err


async def attenuate_token(s: Settings | None, token: str, caveats: list[str], peer_ids: list[str]) -> str:
    """``token`` narrowed by caveat lines and by third-party caveats to distinct registered peers (their public
    keys from the workers' directory)."""
    out = cap.attenuate(token, caveats)
    if peer_ids:
        if s is None:
            raise InvalidInput("--peer needs the workers (a data dir and a running stack) for the peers' public keys")
        found = await directory(await client(s), s, peer_ids)
        for pid in peer_ids:
            out = dc.add_peer_caveat(out, pid, bytes.fromhex(found.peers[pid]), f"discharge for {pid}",
                                     secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(24),
                                     secrets.token_bytes(24))
    return out


# What `westworld agent seal` can seal a token into: workflow type -> (input model, token field, workflow id).
SEALABLE: dict[str, tuple[type[BaseModel], str, Callable[[Any], str]]] = {
    "AgentActionWorkflow": (AgentActionInput, "token", lambda i: str(i.workflow_id)),
    "CanaryRolloutWorkflow": (CanaryInput, "capability_token", lambda i: canary_id(i.name)),
    "ExperimentWorkflow": (ExperimentInput, "rollout_capability_token", lambda i: experiment_id(_exp_name(i))),
}


def _exp_name(inp: ExperimentInput) -> str:
    spec = load_spec(inp.spec_yaml) if inp.spec_yaml is not None else parse_spec(inp.spec)
    return spec.name


def sealed_input_json(workflow_type: str, data: dict[str, Any], token: str, key: CapabilityDirectory) -> str:
    """The start input (JSON, as the Temporal UI takes it) of ``workflow_type`` with ``token`` sealed for it."""
    if workflow_type not in SEALABLE:
        raise InvalidInput(f"--workflow: one of {', '.join(SEALABLE)}")
    model, field, wid = SEALABLE[workflow_type]
    try:
        inp = model.model_validate({**data, field: "-"})
    except ValidationError as err:
        raise InvalidInput(f"the {workflow_type} input: {safe_errors(err)}") from None
    sealed = seal_input(inp, field, token, key, workflow_type, wid(inp))
    return sealed.model_dump_json(indent=2)


async def result_or_refusal(work: Awaitable[T]) -> T:
    """``work``'s result; a workflow that failed with a typed refusal becomes one line naming its type."""
    try:
        return await work
    except WorkflowFailureError as err:
        cause = err.cause
        while isinstance(cause, (ChildWorkflowError, ActivityError)) and cause.cause is not None:
            cause = cause.cause
        why = f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else str(cause or err)
        raise PermanentError(f"refused: {why}") from err
