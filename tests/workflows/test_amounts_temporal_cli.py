"""What `temporal workflow result` and `temporal workflow query` (the Go CLI, through the project's codec server)
show of a DaoVoteWorkflow: every amount a decimal string, never a JSON number a reader rounds (``1e+23``)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from aiohttp import web

from tests.workflows.conftest import Harness
from tests.workflows.test_dao_vote import proposal, start, vote
from westworld.vote import DaoVoteInput
from workers.codec import load_keyring
from workers.codec_server import make_app
from workers.stack.processes import free_port, venv_bin


async def temporal(h: Harness, codec: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(venv_bin("temporal")), *args, "--address", h.settings.temporal_address, "--codec-endpoint", codec,
        "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_temporal_cli_shows_tallies_as_decimal_strings(harness: Harness) -> None:
    handle = await start(harness, DaoVoteInput(proposal=proposal(), early_close=False))
    whale = await vote(handle, harness.voters[30], "for")
    assert whale.weight > 2**53
    runner = web.AppRunner(make_app(load_keyring(harness.settings.resolved_codec_key_file), None,
                                    "http://localhost", open_for_tests=True))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    codec = f"http://127.0.0.1:{port}"
    try:
        queried = await temporal(harness, codec, "workflow", "query", "-w", handle.id, "--type", "status")
        await harness.skipper.fast_forward(handle, timedelta(hours=72, minutes=1))
        await handle.result()
        result = await temporal(harness, codec, "workflow", "result", "-w", handle.id)
    finally:
        await runner.cleanup()
    for shown in (queried, result):
        assert "e+" not in shown, shown
        assert f'"for": "{whale.weight}"' in shown.replace('":"', '": "'), shown
    assert json.loads(result)
