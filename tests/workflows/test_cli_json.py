"""`--json` and exit codes of the read commands, as a script uses them: the CLI in a subprocess against a real
Temporal server, the harness's worker and chain. One JSON document on stdout; amounts in wei as decimal strings
(a JSON number past 2**53 is rounded by every JavaScript reader); people see whole tokens."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle

from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import make_guardians, seed_document
from tests.workflows.test_dao_vote import vote
from tests.workflows.test_document_access import start
from westworld.amounts import format_tokens
from westworld.keys import access_proposal_id, vote_id
from westworld.shelter_access import AccessDecision
from westworld.vote import DaoVoteResult, VoteState
from workers.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from workers.cli.shelter_keys import save_keys
from workers.stack.processes import free_port
from workflows.dao_vote import DaoVoteWorkflow
from workflows.document_access import DocumentAccessWorkflow


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)  # the whole of stdout is one document


async def cli(h: Harness, *args: str, **env: str) -> Ran:
    s = h.settings
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.main", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WESTWORLD_DATA_DIR": str(s.data_dir), "WESTWORLD_TEMPORAL_ADDRESS": s.temporal_address,
             "WESTWORLD_TASK_QUEUE": h.task_queue, "WESTWORLD_CHAIN_RPC_URL": s.chain_rpc_url, **env})
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return Ran(proc.returncode or 0, out.decode(), err.decode())


async def test_read_commands_print_one_json_document_with_amounts_as_strings(harness: Harness) -> None:
    h = harness
    g = await make_guardians(h, n=4, k=2)
    doc = await seed_document(h, g, b"minutes")
    access = await start(h, g, doc)
    request_id = access.id.split(":", 1)[1]
    pid = access_proposal_id(request_id)
    ballot: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = h.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, vote_id(pid))
    await eventually(lambda: access.query(DocumentAccessWorkflow.status), lambda s: s.decision is AccessDecision.VOTING)
    await eventually(lambda: ballot.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    receipt = await vote(ballot, h.voters[30], "for")
    assert receipt.weight > 2**53  # 500,000 tokens: a JSON number would lose digits

    running = await cli(h, "vote", "status", pid, "--json")
    assert running.code == EXIT_OK, running.err
    st = running.json()
    assert st["running"] is True and st["result"] is None and st["workflow_id"] == vote_id(pid)
    assert st["status"]["tally"]["for"] == str(receipt.weight) and st["status"]["tally"]["against"] == "0"
    assert int(st["status"]["total_supply"]) > receipt.weight and isinstance(st["status"]["quorum_weight"], str)
    text = await cli(h, "vote", "status", pid)
    assert f"for {format_tokens(receipt.weight)}" in text.out and "500,000" in text.out
    assert f"of {format_tokens(int(st['status']['total_supply']), 'WEST')}" in text.out
    assert str(receipt.weight) not in text.out  # people see tokens, not wei

    stuck = await cli(h, "stuck", "--older-than", "0s", "--json")
    assert stuck.code == EXIT_OK, stuck.err
    rows = {r["workflow_id"]: r for r in stuck.json()}
    assert access.id in rows and rows[access.id]["workflow_type"] == "DocumentAccessWorkflow"
    assert rows[vote_id(pid)]["step"] and isinstance(rows[vote_id(pid)]["pending"], list)

    await h.skipper.fast_forward(ballot, timedelta(hours=72, minutes=1))
    result: DaoVoteResult = await h.client.get_workflow_handle(ballot.id, result_type=DaoVoteResult).result()
    await eventually(lambda: access.query(DocumentAccessWorkflow.status),
                     lambda s: s.decision is AccessDecision.COLLECTING)
    done = (await cli(h, "vote", "status", pid, "--json")).json()
    assert done["running"] is False and done["status"] is None
    assert done["result"]["decision"] == result.decision == "approved"
    assert done["result"]["tally"]["for"] == str(result.tally["for"]) == str(receipt.weight)

    key_file = h.settings.data_dir / "keys" / f"{g.keys[0].id}.key"
    save_keys(g.keys[0], key_file)
    pending = await cli(h, "shelter", "pending", "--key", str(key_file), "--json")
    assert pending.code == EXIT_OK, pending.err
    waits = pending.json()
    assert waits["guardian"] == g.keys[0].id and waits["unreachable"] == []
    assert [(p["workflow_id"], p["what"]) for p in waits["pending"]] == [(access.id, "share")]

    shown = await cli(h, "audit", "show", "--last", "50", "--json")
    assert shown.code == EXIT_OK, shown.err
    log = shown.json()
    assert log["ok"] is True and log["tree_size"] >= 1 and len(log["root"]) == 64 and log["problems"] == []
    results = [e for e in log["entries"] if e["kind"] == "vote.result" and e["subject"] == pid]
    assert len(results) == 1 and results[0]["payload"]["tally"]["for"] == str(receipt.weight)

    status = await cli(h, "shelter", "status", access.id, "--json")
    assert status.code == EXIT_OK, status.err
    assert status.json()["status"] == "running"
    assert status.json()["state"]["decision"] == AccessDecision.COLLECTING.value


async def test_exit_codes_tell_a_refusal_a_usage_error_and_a_stack_that_does_not_answer(harness: Harness) -> None:
    unknown = await cli(harness, "vote", "status", "no-such-proposal", "--json")
    assert unknown.code == EXIT_FAILED and unknown.out == "" and "unknown proposal" in unknown.err
    usage = await cli(harness, "stuck", "--older-than", "soon", "--json")
    assert usage.code == EXIT_USAGE and usage.out == ""
    down = await cli(harness, "stuck", "--json", WESTWORLD_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    assert down.code == EXIT_UNREACHABLE and down.out == "" and "cannot reach Temporal" in down.err
    missing = await cli(harness, "experiment", "status", "no-such-experiment", "--json")
    assert missing.code == EXIT_FAILED and missing.out == "" and "experiment:no-such-experiment" in missing.err


async def test_the_registries_and_the_halt_as_json(harness: Harness) -> None:
    halt = await cli(harness, "halt", "status", "--json")
    assert halt.code == EXIT_OK, halt.err
    assert halt.json()["halt"]["halted"] is False and halt.json()["resume"] is None
    peers = await cli(harness, "agent", "peers", "list", "--json")
    assert peers.code == EXIT_OK, peers.err
    assert set(peers.json()) == {"nodes", "peers"} and isinstance(peers.json()["nodes"], dict)
