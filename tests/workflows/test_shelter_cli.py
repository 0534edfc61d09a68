"""`westworld shelter` as people use it: the CLI in subprocesses against a real Temporal server, the harness's worker,
real js-ipfs and arlocal. A document stored through the CLI is opened by a journalist after a DAO vote and by an
activist within the emergency window, each reconstructing the key on their side; a rotation moves the shares."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.storage.arweave import Wallet
from tests.workflows.conftest import Harness, eventually
from westworld.keys import access_proposal_id, proposal_of, vote_id
from westworld.rotation import RotationPhase, RotationResult
from westworld.shelter_access import AccessDecision, AccessResult
from westworld.vote import DaoVoteResult, VoteState
from workflows.dao_vote import DaoVoteWorkflow
from workflows.document_access import DocumentAccessWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow

TEXT = "Minutes of the assembly: the relay on the water tower is run by Ana.\n"


@pytest.fixture
def settings_overrides(ipfs_api_url: str, arlocal_url: str, arweave_wallet: Wallet,
                       tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wallet_file = tmp_path_factory.mktemp("w") / "wallet.json"
    wallet_file.write_text(json.dumps(arweave_wallet.to_jwk()))
    return {"ipfs_api_url": ipfs_api_url, "arweave_url": arlocal_url, "arweave_wallet_file": wallet_file}


async def cli(h: Harness, *args: str, ok: bool = True) -> str:
    s = h.settings
    env = {**os.environ, "WESTWORLD_DATA_DIR": str(s.data_dir), "WESTWORLD_TEMPORAL_ADDRESS": s.temporal_address,
           "WESTWORLD_TASK_QUEUE": h.task_queue, "WESTWORLD_CHAIN_RPC_URL": s.chain_rpc_url,
           "WESTWORLD_IPFS_API_URL": s.ipfs_api_url, "WESTWORLD_ARWEAVE_URL": s.arweave_url,
           "WESTWORLD_ARWEAVE_WALLET_FILE": str(s.arweave_wallet_file), "WESTWORLD_SIA_URL": ""}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers.main", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert (proc.returncode == 0) == ok, f"westworld {' '.join(args)} -> {proc.returncode}:\n{text}"
    return text


async def approve(h: Harness, vote_id: str, voter_key: Path) -> None:
    handle = h.client.get_workflow_handle(vote_id, result_type=DaoVoteResult)
    await eventually(lambda: _state(handle), lambda s: s is VoteState.OPEN)
    assert "accepted" in await cli(h, "vote", "cast", proposal_of(vote_id), "--choice", "for",
                                   "--key", str(voter_key))
    await h.skipper.fast_forward(handle, timedelta(hours=72, minutes=1))


async def _state(handle: WorkflowHandle[Any, DaoVoteResult]) -> VoteState | None:
    try:
        return (await handle.query(DaoVoteWorkflow.status)).state
    except RPCError as err:  # the child vote is not started yet
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return None


async def test_store_request_vote_share_open_emergency_and_rotate(harness: Harness) -> None:
    h, d = harness, harness.settings.data_dir
    keys = d / "shelter" / "keys"
    for i in range(1, 6):
        await cli(h, "shelter", "keygen", "--name", f"g{i}")
    await cli(h, "shelter", "keygen", "--name", "journalist")
    assert (keys / "g1.key").stat().st_mode & 0o777 == 0o600
    assert "exists; not overwriting" in await cli(h, "shelter", "keygen", "--name", "g1", ok=False)
    pubs = [a for i in range(1, 6) for a in ("--guardian", str(keys / f"g{i}.key.pub"))]
    assert "3-of-5" in await cli(h, "shelter", "guardians", "init", "--threshold", "3", *pubs)
    doc_id = f"minutes-{uuid.uuid4().hex[:6]}"  # document ids are workflow ids on the session's shared server
    doc = d / "minutes.txt"
    doc.write_text(TEXT)
    stored = await cli(h, "shelter", "store", str(doc), "--id", doc_id, "--network", "ipfs",
                       "--network", "arweave")
    assert f"stored {doc_id}" in stored and "ipfs" in stored and "arweave" in stored
    assert not (d / "shelter" / "staging" / doc_id).exists()

    voter = d / "whale.key"
    voter.write_text(h.voters[30].key.hex())
    out = await cli(h, "shelter", "request", doc_id, "--reason", "investigation", "--key",
                    str(keys / "journalist.key"), "--request-id", "minutes-j1")
    assert "started access:minutes-j1" in out
    await approve(h, vote_id(access_proposal_id("minutes-j1")), voter)
    access: WorkflowHandle[DocumentAccessWorkflow, AccessResult] = h.client.get_workflow_handle_for(
        DocumentAccessWorkflow.run, "access:minutes-j1")
    await eventually(lambda: access.query(DocumentAccessWorkflow.status),
                     lambda s: s.decision is AccessDecision.COLLECTING)
    pending = await cli(h, "shelter", "pending", "--key", str(keys / "g2.key"))
    assert "access:minutes-j1" in pending and "waits for your share" in pending
    assert "still running" in await cli(h, "shelter", "open", "minutes-j1", "--key", str(keys / "journalist.key"),
                                        "--out", str(d / "early.txt"), ok=False)
    for g in ("g1", "g2"):
        assert "accepted" in await cli(h, "shelter", "submit-share", "minutes-j1", "--key", str(keys / f"g{g[1]}.key"))
    again = await cli(h, "shelter", "submit-share", "minutes-j1", "--key", str(keys / "g1.key"), ok=False)
    assert "already submitted" in again
    await cli(h, "shelter", "submit-share", "minutes-j1", "--key", str(keys / "g5.key"))
    out_file = d / "opened.txt"
    opened = await cli(h, "shelter", "open", "minutes-j1", "--key", str(keys / "journalist.key"), "--out",
                       str(out_file))
    assert "key reconstructed here" in opened
    assert out_file.read_text() == TEXT and out_file.stat().st_mode & 0o777 == 0o600
    wrong = await cli(h, "shelter", "open", "minutes-j1", "--key", str(keys / "g1.key"), "--out",
                      str(d / "x.txt"), ok=False)
    assert "does not open" in wrong and not (d / "x.txt").exists()

    await cli(h, "shelter", "keygen", "--name", "activist")
    out = await cli(h, "shelter", "emergency", doc_id, "--reason", "raid tonight", "--key",
                    str(keys / "activist.key"), "--request-id", "raid-1")
    assert "started emergency:raid-1" in out
    for g in ("g3", "g4", "g5"):
        await cli(h, "shelter", "submit-share", "emergency:raid-1", "--key", str(keys / f"{g}.key"))
    await approve(h, vote_id(access_proposal_id("raid-1", emergency=True)), voter)
    await cli(h, "shelter", "open", "raid-1", "--key", str(keys / "activist.key"), "--out", str(d / "raid.txt"))
    assert (d / "raid.txt").read_text() == TEXT
    assert "granted" in await cli(h, "shelter", "status", "emergency:raid-1")

    for i in range(1, 4):
        await cli(h, "shelter", "keygen", "--name", f"n{i}")
    new = [a for i in range(1, 4) for a in ("--guardian", str(keys / f"n{i}.key.pub"))]
    out = await cli(h, "shelter", "rotate", *new)  # k stays 3, the current epoch's; the DAO votes on the new set
    rot_id = out.split("started ", 1)[1].split(":", 2)[0] + ":" + out.split("started ", 1)[1].split(":", 2)[1]
    assert rot_id == "rotation:1" and "the DAO votes on the new set first" in out
    rotation: WorkflowHandle[GuardianRotationWorkflow, RotationResult] = h.client.get_workflow_handle_for(
        GuardianRotationWorkflow.run, rot_id)
    planned = await eventually(lambda: rotation.query(GuardianRotationWorkflow.status),
                               lambda s: s.phase is RotationPhase.VOTING)
    assert planned.vote_id is not None and planned.vote_id in await cli(h, "shelter", "status", rot_id)
    await approve(h, planned.vote_id, voter)
    await eventually(lambda: rotation.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.COLLECTING)
    asked = await cli(h, "shelter", "pending", "--key", str(keys / "g1.key"))  # a guardian sees what a share approves
    assert f"moves the key to n1, n2, n3 (3-of-3); DAO vote {planned.vote_id}" in asked
    for g in ("g1", "g3", "g4"):
        await cli(h, "shelter", "submit-share", rot_id, "--key", str(keys / f"{g}.key"))
    await eventually(lambda: rotation.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
    assert "waits for your acknowledgement" in await cli(h, "shelter", "pending", "--key", str(keys / "n1.key"))
    for n in ("n1", "n2", "n3"):
        await cli(h, "shelter", "acknowledge", rot_id, "--key", str(keys / f"{n}.key"))
    assert (await rotation.result()).phase is RotationPhase.COMPLETED
    assert "completed" in await cli(h, "shelter", "status", rot_id)
