"""AuditAnchorWorkflow: verifies the log, anchors (size, root) on the real chain, refuses a tampered log."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from eth_typing import HexStr
from temporalio.client import WorkflowFailureError

from activities.store import audit_entries
from tests.workflows.conftest import Harness
from westworld.audit_anchor import parse_anchor
from workflows.audit_anchor import AuditAnchorWorkflow


async def test_anchor_puts_the_verified_root_on_chain(harness: Harness) -> None:
    log = harness.resources.audit
    await log.append("test.decision", "anchor", {"n": 1})
    head = await log.head()
    result = await harness.client.execute_workflow(
        AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert (result.tree_size, result.root) == (head.tree_size, head.root)
    assert result.tx_hash is not None
    tx = await harness.resources.chain.w3.eth.get_transaction(HexStr(result.tx_hash))
    assert parse_anchor(bytes(tx["input"])) == (head.tree_size, head.root)
    latest = (await log.latest(1))[0]
    assert (latest.seq, latest.kind, latest.payload["tx"]) == (result.audit_seq, "audit.anchor", result.tx_hash)


async def test_a_tampered_log_is_not_anchored(harness: Harness) -> None:
    log = harness.resources.audit
    await log.append("test.decision", "tamper", {"decision": "approved"})
    async with harness.resources.database.engine.begin() as conn:
        await conn.execute(sa.update(audit_entries).where(audit_entries.c.seq == 0)
                           .values(payload='{"decision":"rejected"}'))
    with pytest.raises(WorkflowFailureError) as exc:
        await harness.client.execute_workflow(
            AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert "entry 0" in str(exc.value.cause)
