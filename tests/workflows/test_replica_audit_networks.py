"""The replica audit keeps a document where its owner stored it: a document stored to IPFS only is checked and
repaired on IPFS only, never copied onto Arweave (permanent storage) because Arweave is configured on the worker.
Real js-ipfs and arlocal behind a real worker."""

from __future__ import annotations

import uuid

from tests.workflows.conftest import Harness
from tests.workflows.test_store_document import keygen, settings_overrides, store
from westworld.shelter import Network, ReplicaAuditInput, ReplicaAuditResult
from workflows.replica_audit import ReplicaAuditWorkflow

__all__ = ["settings_overrides"]


async def test_a_document_stored_to_ipfs_only_is_audited_and_repaired_on_ipfs_only(harness: Harness) -> None:
    await keygen(harness)
    document_id = f"ipfs-only-{uuid.uuid4().hex[:6]}"
    state = await store(harness, document_id, b"minutes " * 50, networks=[Network.IPFS], min_good_replicas=1)
    assert [r.network for r in state.replicas] == [Network.IPFS]
    audit: ReplicaAuditResult = await harness.client.execute_workflow(
        ReplicaAuditWorkflow.run, ReplicaAuditInput(document_ids=[document_id]),
        id=f"replica-audit-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert [(f.network, f.state, f.repaired) for f in audit.findings] == [] and audit.replicas_checked == 1
