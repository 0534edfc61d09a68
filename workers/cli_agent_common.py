"""What the `westworld agent` and `westworld halt` sub-commands share: running a coroutine with errors shown
as one line, the Temporal client, and writing a token."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from westworld.errors import WestworldError
from workers.cli_common import fail
from workers.client import NotConfigured, connect
from workers.settings import Settings

T = TypeVar("T")


def run(work: Awaitable[T]) -> T:
    """Run ``work``; a user-caused or connection failure exits with one red line saying what is wrong."""
    try:
        return asyncio.run(guarded(work))
    except (WestworldError, NotConfigured) as err:
        raise fail(err.message if isinstance(err, WestworldError) else str(err)) from err
    except WorkflowAlreadyStartedError as err:
        raise fail(f"{err.workflow_id} already exists: pick another action id") from err
    except (RPCError, ValidationError) as err:
        raise fail(f"{type(err).__name__}: {err}") from err


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
