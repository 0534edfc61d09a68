"""`westworld agent` and `westworld halt` as a person uses them: the CLI in a subprocess against a real Temporal
server and the worker of the harness (same data dir, so the same SQLite database and payload keys)."""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio.client import WorkflowHandle

from tests.workflows.conftest import Harness, eventually
from westworld.agents import AgentActionResult
from workflows.agent_action import AgentActionWorkflow


async def cli(h: Harness, *args: str, ok: bool = True) -> str:
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(h.settings.data_dir),
           "WESTWORLD_TEMPORAL_ADDRESS": h.settings.temporal_address, "WESTWORLD_TASK_QUEUE": h.task_queue}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert (proc.returncode == 0) == ok, f"westworld {' '.join(args)} -> {proc.returncode}:\n{text}"
    return text


async def test_mint_attenuate_act_sign_halt_and_resume_from_the_cli(harness: Harness) -> None:
    h = harness
    d = h.settings.data_dir
    keys = d / "capabilities" / "keys"
    assert "active root key: k" in await cli(h, "agent", "keys", "rotate")
    await cli(h, "agent", "peers", "add", "p0", "p1", "p2", "--region", "eu")
    await cli(h, "agent", "peers", "add", *(f"n{i}" for i in range(7)), "--region", "us", "--no-signer")
    assert "10 nodes, 3 peers" in await cli(h, "agent", "peers", "list")
    assert (keys / "peer-p0.key").stat().st_mode & 0o777 == 0o600
    await cli(h, "agent", "mint", "bot", "--actions", "set_version", "--out", str(d / "bot.tok"))
    await cli(h, "agent", "attenuate", str(d / "bot.tok"), "--caveat", "affects_nodes_le = 1",
              "--out", str(d / "narrow.tok"))
    shown = await cli(h, "agent", "inspect", str(d / "narrow.tok"))
    assert "agent:    bot" in shown and "- affects_nodes_le = 1" in shown
    assert "unknown caveat 'owner'" in await cli(h, "agent", "attenuate", str(d / "bot.tok"), "--caveat", "owner = me",
                                                 ok=False)

    out = await cli(h, "agent", "act", "--token", str(d / "narrow.tok"), "--action", "set_version",
                    "--nodes", "n0,n1", "--version", "2.0")
    assert "denied by caveat [affects_nodes_le = 1]: the action touches 2 nodes, more than 1" in out

    await cli(h, "agent", "act", "--token", str(d / "bot.tok"), "--action", "set_version", "--nodes",
              "n0,n1,n2,n3,n4", "--version", "2.0", "--peers-required", "2", "--action-id", "wide1", "--no-wait")
    wid = "agent-action:bot:wide1"
    handle: WorkflowHandle[AgentActionWorkflow, AgentActionResult] = h.client.get_workflow_handle_for(
        AgentActionWorkflow.run, wid)
    await eventually(lambda: handle.query(AgentActionWorkflow.status), lambda s: s.step == "awaiting peer signatures")
    refused = await cli(h, "agent", "sign", wid, "--peer", "p0", "--key", str(keys / "peer-p1.key"), ok=False)
    assert "BadSignerSignature" in refused
    assert "1 peer signatures so far" in await cli(h, "agent", "sign", wid, "--peer", "p0", "--key",
                                                   str(keys / "peer-p0.key"))
    await cli(h, "agent", "sign", wid, "--peer", "p2", "--key", str(keys / "peer-p2.key"))
    result = await handle.result()
    assert result.allowed and result.peers == ["p0", "p2"]

    await cli(h, "halt", "guardians", "add", "g1")
    assert "halted: epoch 1" in await cli(h, "halt", "start", "--reason", "drill", "--guardians-required", "1")
    status = await eventually(lambda: cli(h, "halt", "status"), lambda s: "HALTED" in s)
    assert "drill" in status and "resume needs 1 guardians" in status
    out = await cli(h, "agent", "act", "--token", str(d / "bot.tok"), "--action", "set_version", "--nodes", "n0",
                    "--version", "2.0", "--peers-required", "1")
    assert "denied by caveat [network-halted]" in out
    assert "accepted: 1 guardian signatures on halt 1" in await cli(h, "halt", "resume", "--guardian", "g1",
                                                                    "--key", str(keys / "guardian-g1.key"))
    await eventually(lambda: cli(h, "halt", "status"), lambda s: "not halted" in s)
    assert "every older token is revoked" in await cli(h, "agent", "revoke", "--all")
    out = await cli(h, "agent", "act", "--token", str(d / "narrow.tok"), "--action", "set_version",
                    "--nodes", "n0", "--version", "2.0")
    assert "denied by caveat [revocation-epoch]" in out
