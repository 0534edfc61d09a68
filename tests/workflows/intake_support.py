"""The vote intake under test: the web app served in-process (its clock can be shifted) or as the process `westworld
up` starts (to be killed), and a client that posts signed votes to it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fixtures.harness import Harness
from workers.settings import Settings
from workers.stack import processes
from workers.web.app import create_app


@dataclass
class Clock:
    """The intake's wall clock, shiftable (the workflow's is Temporal's, skipped separately)."""

    shift: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@dataclass
class Posted:
    status: int
    body: dict[str, Any]


async def post_vote(http: aiohttp.ClientSession, url: str, vote_json: str) -> Posted:
    async with http.post(f"{url}/v1/votes", data=vote_json, headers={"content-type": "application/json"}) as r:
        return Posted(r.status, await r.json())


@asynccontextmanager
async def serve_intake(h: Harness, clock: Clock | None = None) -> AsyncIterator[str]:
    """The intake app in this process, on a free loopback port, hinting through the harness's client."""
    app = create_app(h.settings, client=h.client, clock=clock, processes=2)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = processes.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def settings_env(s: Settings, **extra: object) -> dict[str, str]:
    env = {**os.environ, **{f"WESTWORLD_{k.upper()}": str(v) for k, v in s.model_dump().items() if v is not None}}
    env.update({f"WESTWORLD_{k.upper()}": str(v) for k, v in extra.items()})
    env["WESTWORLD_DATA_DIR"] = str(s.data_dir)
    return env


def spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``westworld <command>`` as its own process (the way `westworld up` starts it)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "workers.main", command], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])


async def wait_healthy(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path,
                       timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the web process exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            async with http.get(f"{url}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"the web process did not answer in {timeout} s: {log.read_text()[-2000:]}")
