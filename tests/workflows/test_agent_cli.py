"""`westworld agent`, `westworld halt` and `westworld shelter rotate` as a person uses them: the CLI in a
subprocess against a real Temporal server and the harness's worker, with NO data dir of its own.

The CLI's WESTWORLD_DATA_DIR is an empty directory (the payload key file is given by WESTWORLD_CODEC_KEY_FILE):
it must never need the project database or a worker's keys. People hold their key files (the operator key
`westworld up` made, copied out; guardians' and peers' keys generated with --new-key) and pass them with --key;
every change is a signed request the worker checks (docs/capabilities.md, "Who may change a protection").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from tests.workflows.admin_support import operator_key
from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import make_guardians
from westworld.agents import NetworkHaltResult
from westworld.keys import WATCH_ID, rotation_id
from workers.wiring.capabilities import operator_key_file
from workflows.anomaly_watch import AnomalyWatchWorkflow
from workflows.network_halt import NetworkHaltWorkflow


def client_env(h: Harness, empty: Path) -> dict[str, str]:
    return {**os.environ, "WESTWORLD_DATA_DIR": str(empty),
            "WESTWORLD_CODEC_KEY_FILE": str(h.settings.resolved_codec_key_file),
            "WESTWORLD_TEMPORAL_ADDRESS": h.settings.temporal_address, "WESTWORLD_TASK_QUEUE": h.task_queue}


async def cli(env: dict[str, str], *args: str, ok: bool | None = True) -> str:
    """`westworld ARGS` with ``env``; ``ok`` says whether it must succeed (None: either)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert ok is None or (proc.returncode == 0) == ok, f"westworld {' '.join(args)} -> {proc.returncode}:\n{text}"
    return text


@pytest.mark.usefixtures("fresh_watch")
@pytest.mark.timeout(600)  # some thirty CLI processes on a loaded 2-core machine
async def test_a_client_without_a_data_dir_administers_the_network_by_signatures(harness: Harness,
                                                                                 tmp_path: Path) -> None:
    h = harness
    empty, me = tmp_path / "client-data", tmp_path / "my-keys"
    empty.mkdir()
    me.mkdir()
    env = client_env(h, empty)
    operator_key(h)  # `westworld up` made it in the worker's data dir; the operator holds a copy
    op = str(shutil.copy(operator_key_file(h.settings), me / "operator.key"))

    assert "active root key: k" in await cli(env, "agent", "keys", "rotate", "--key", op)
    assert "registered 7 nodes" in await cli(env, "agent", "peers", "add", *(f"n{i}" for i in range(7)),
                                             "--region", "us", "--no-signer", "--key", op)
    # genesis: the operator registers the first guardians (their key files are generated for them)
    for g in ("g1", "g2"):
        assert f"registered guardian {g}" in await cli(env, "halt", "guardians", "add", g, "--new-key",
                                                       str(me / f"{g}.key"), "--key", op)
    assert (me / "g1.key").stat().st_mode & 0o777 == 0o600
    guardians = ["--key", str(me / "g1.key"), "--key", str(me / "g2.key")]
    # after genesis a peer needs k guardians, not the operator
    refused = await cli(env, "agent", "peers", "add", "p0", "--new-key", str(me / "p0-spare.key"), "--key", op,
                        ok=False)
    assert "Unauthorised" in refused and "is not a registered guardian (needs 2 registered guardians)" in refused
    for p in ("p0", "p2"):
        await cli(env, "agent", "peers", "add", p, "--region", "eu", "--new-key", str(me / f"{p}.key"), *guardians)
    assert "9 nodes, 2 peers" in await cli(env, "agent", "peers", "list")
    assert "removed p2" in await cli(env, "agent", "peers", "remove", "p2", *guardians)
    assert "8 nodes, 1 peers" in await cli(env, "agent", "peers", "list")

    refused = await cli(env, "agent", "mint", "bot", "--actions", "set_version", "--key", str(me / "g1.key"),
                        ok=False)
    assert "is not a registered operator" in refused
    await cli(env, "agent", "mint", "bot", "--actions", "set_version", "--key", op, "--out", str(me / "bot.tok"))
    assert (me / "bot.tok").read_text().strip()  # the token, opened here (it travelled sealed to this call)

    assert "halted: epoch 1" in await cli(env, "halt", "start", "--reason", "drill", "--key", op)
    halt: WorkflowHandle[NetworkHaltWorkflow, NetworkHaltResult] = h.client.get_workflow_handle_for(
        NetworkHaltWorkflow.run, "halt:1")
    await eventually(lambda: halt.query(NetworkHaltWorkflow.status), lambda s: s.halted)
    status = await cli(env, "halt", "status")
    assert "drill" in status and "resume needs 2 guardians" in status
    assert "accepted: 1 guardian signatures on halt 1" in await cli(
        env, "halt", "resume", "--guardian", "g1", "--key", str(me / "g1.key"))
    await cli(env, "halt", "resume", "--guardian", "g2", "--key", str(me / "g2.key"))
    assert (await halt.result()).resumed_by == ["g1", "g2"]
    assert "not halted" in await cli(env, "halt", "status")

    assert "every older token is revoked" in await cli(env, "agent", "revoke", "--all", "--key", op)
    rotated = await cli(env, "agent", "keys", "rotate", "--key", op)
    old_key = re.search(r"active root key: (\S+)", rotated)
    assert old_key
    assert f"retired {old_key[1]}" in await cli(env, "agent", "keys", "retire", old_key[1], "--key", op)

    # the network's watch: the operator tightens it, only guardians stop it
    assert "anomaly-watch: started" in await cli(env, "agent", "watch")
    try:
        watch: WorkflowHandle[AnomalyWatchWorkflow, None] = h.client.get_workflow_handle_for(
            AnomalyWatchWorkflow.run, WATCH_ID)
        await eventually(lambda: watch.query(AnomalyWatchWorkflow.status), lambda s: s.protected)
        assert "reconfigured" in await cli(env, "agent", "watch-set", "--concentration-critical-pct", "8",
                                           "--reason", "drill", "--key", op)
        assert "is not a registered guardian" in await cli(env, "agent", "watch-stop", "--reason", "x", "--key", op,
                                                            ok=False)
        assert "anomaly-watch stopped" in await cli(env, "agent", "watch-stop", "--reason", "drill over",
                                                    *guardians)
    finally:
        with contextlib.suppress(RPCError):  # the watch stopped: nothing to terminate
            await h.client.get_workflow_handle(WATCH_ID).terminate("test over")
    assert list(empty.iterdir()) == []  # the client wrote nothing in its data dir, and read nothing from it


async def test_shelter_rotate_reads_the_current_epoch_through_the_worker(harness: Harness, tmp_path: Path) -> None:
    h = harness
    empty = tmp_path / "client-data"
    empty.mkdir()
    env = client_env(h, empty)
    assert "no key epoch yet" in await cli(env, "shelter", "rotate", ok=False)
    g = await make_guardians(h, n=3, k=2)
    out = await cli(env, "shelter", "rotate")
    assert f"started rotation:{g.epoch.epoch}" in out
    await h.client.get_workflow_handle(rotation_id(g.epoch.epoch)).terminate("test over")
    assert list(empty.iterdir()) == []
