"""StoreDocumentWorkflow and ReplicaAuditWorkflow on a real Temporal server, with a real worker storing to real
js-ipfs and arlocal (Sia unconfigured: no renterd runs here). Histories (decoded with the codec key), the worker's
logs, the database and the data dir hold no plaintext and no key material."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.shelter_docs import stage_document, staging_path
from activities.shelter_keys import ShelterKeyActivities, create_epoch
from activities.sql.document_store import DocumentStore
from activities.storage.arweave import Wallet
from activities.storage.ipfs import IpfsClient
from tests.activities.test_shelter_keys import make_guardians, open_share
from tests.workflows.conftest import Harness
from westworld import envelope, shamir
from westworld.keys import document_id as document_workflow_id
from westworld.shelter import (
    CreateEpochInput,
    KeyEpoch,
    Network,
    ReplicaAuditInput,
    ReplicaAuditResult,
    ReplicaState,
    StoreDocumentInput,
    StoreDocumentState,
    StoreStep,
    data_key_aad,
    open_document,
)
from workers.metrics import Metrics
from workers.stack.processes import free_port
from workers.wiring.shelter_storage import open_replicators
from workers.worker import build_worker, open_resources
from workflows.replica_audit import ReplicaAuditWorkflow
from workflows.store_document import StoreDocumentWorkflow


@pytest.fixture
def settings_overrides(ipfs_api_url: str, arlocal_url: str, arweave_wallet: Wallet,
                       tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wallet_file = tmp_path_factory.mktemp("w") / "wallet.json"
    wallet_file.write_text(json.dumps(arweave_wallet.to_jwk()))
    return {"ipfs_api_url": ipfs_api_url, "arweave_url": arlocal_url, "arweave_wallet_file": wallet_file}


async def keygen(h: Harness) -> tuple[KeyEpoch, dict[str, bytes]]:
    guardians, privates = make_guardians(4)
    epoch = await create_epoch(ShelterKeyActivities(h.resources.database).store,
                               CreateEpochInput(guardians=guardians, threshold=3))
    return epoch, privates


def root_message(err: BaseException) -> str:
    """The message at the bottom of a Temporal failure chain (workflow -> activity -> application error)."""
    while (inner := getattr(err, "cause", None)) is not None:
        err = inner
    return str(err)


def master_key(epoch: KeyEpoch, privates: dict[str, bytes]) -> bytes:
    shares = [open_share(epoch, g.id, privates[g.id]) for g in epoch.guardians[:3]]
    return shamir.combine(shares, threshold=3)


async def store(h: Harness, document_id: str, plaintext: bytes, **kw: Any) -> StoreDocumentState:
    stage_document(h.settings.data_dir, document_id, plaintext)
    return await h.client.execute_workflow(
        StoreDocumentWorkflow.run, StoreDocumentInput(document_id=document_id, title="t", **kw),
        id=document_workflow_id(document_id), task_queue=h.task_queue)



def payloads_of(message: Message) -> Iterator[Payload]:
    """Every Payload inside a history event (inputs, results, failures' details, headers, search attributes)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            items: list[Any] = [value]
        elif hasattr(value, "values") and callable(value.values):  # a map field
            items = list(value.values())
        else:  # a repeated field
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from payloads_of(item)


async def decoded_history(h: Harness, workflow_id: str) -> bytes:
    """Every payload of the workflow's history, decrypted with the codec, plus the raw history JSON."""
    history = await h.client.get_workflow_handle(workflow_id).fetch_history()
    payloads = [p for event in history.events for p in payloads_of(event)]
    # every activity input/result is encrypted (search attributes are plain by design: step names, document id)
    assert sum(p.metadata.get("encoding") == b"binary/encrypted" for p in payloads) >= 5
    codec = h.client.data_converter.payload_codec
    assert codec is not None
    clear = await codec.decode(payloads)
    return history.to_json().encode() + b"".join(p.data for p in clear)


async def test_store_replicates_audits_and_keeps_secrets_out_of_history(harness: Harness,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    epoch, privates = await keygen(harness)
    secret = b"the shelter's founding minutes " + uuid.uuid4().hex.encode()
    result = await store(harness, "minutes", secret * 50)
    assert result.step == StoreStep.DONE
    states = {r.network: r.state for r in result.replicas}
    assert states == {Network.IPFS: ReplicaState.OK, Network.ARWEAVE: ReplicaState.OK,
                      Network.SIA: ReplicaState.NOT_CONFIGURED}
    assert not staging_path(harness.settings.data_dir, "minutes").exists()
    handle = harness.client.get_workflow_handle("document:minutes")
    assert (await handle.query(StoreDocumentWorkflow.status)).step == StoreStep.DONE
    # the requester's side: k shares -> master key -> the document, from the IPFS replica
    record = await DocumentStore(harness.resources.database).get("minutes")
    assert record is not None
    cid = next(r.locator for r in record.replicas if r.network == Network.IPFS)
    ipfs = IpfsClient(harness.settings.ipfs_api_url)
    try:
        blob = await ipfs.cat(cid)
    finally:
        await ipfs.aclose()
    assert blob is not None
    master = master_key(epoch, privates)
    assert open_document(master, record, blob) == secret * 50
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.kind, entry.subject) == ("shelter.document.stored", "minutes")
    assert entry.payload["ciphertext_sha256"] == record.ciphertext_sha256
    # nothing secret in the history, even decrypted with the codec key
    data_key = envelope.open_sealed(master, record.wrapped_key, data_key_aad("minutes"))
    shares = [open_share(epoch, g.id, privates[g.id]).value for g in epoch.guardians]
    history = await decoded_history(harness, "document:minutes")
    assert record.ciphertext_sha256.encode() in history  # the decoding worked: public data is there
    logs = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    assert len(caplog.records) > 0, "no log records captured"
    db_file = harness.settings.data_dir / "westworld.db"
    stored = b"".join(p.read_bytes() for p in db_file.parent.glob("westworld.db*"))
    stored += b"".join(p.read_bytes() for p in (harness.settings.data_dir / "shelter").rglob("*") if p.is_file())
    assert record.ciphertext_sha256.encode() in stored  # the scan reads the index
    for needle in (secret, master, data_key, *shares):
        assert needle not in history and needle.hex().encode() not in history
        assert needle.hex() not in logs and repr(needle) not in logs
        assert needle not in stored and needle.hex().encode() not in stored


async def test_a_second_store_under_the_same_id_is_refused(harness: Harness) -> None:
    await keygen(harness)
    await store(harness, "dup", b"first", networks=[Network.IPFS])
    stage_document(harness.settings.data_dir, "dup", b"second")
    with pytest.raises(WorkflowAlreadyStartedError):
        await harness.client.start_workflow(
            StoreDocumentWorkflow.run, StoreDocumentInput(document_id="dup"), id="document:dup",
            task_queue=harness.task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    # allowed to reuse the closed id, the new run is refused by the index and loses nothing
    with pytest.raises(WorkflowFailureError) as err:
        await harness.client.execute_workflow(
            StoreDocumentWorkflow.run, StoreDocumentInput(document_id="dup"), id="document:dup",
            task_queue=harness.task_queue)
    assert "document dup is already stored" in root_message(err.value)
    assert staging_path(harness.settings.data_dir, "dup").read_bytes() == b"second"


async def test_missing_plaintext_fails_with_the_staging_path(harness: Harness) -> None:
    await keygen(harness)
    with pytest.raises(WorkflowFailureError) as err:
        await harness.client.execute_workflow(
            StoreDocumentWorkflow.run, StoreDocumentInput(document_id="ghost"), id="document:ghost",
            task_queue=harness.task_queue)
    assert "no staged plaintext for document ghost" in root_message(err.value)
    state = await harness.client.get_workflow_handle("document:ghost").query(StoreDocumentWorkflow.status)
    assert state.step == StoreStep.FAILED and state.error and "staging/ghost" in state.error


async def test_too_few_replicas_fail_the_store_and_say_why(harness: Harness) -> None:
    await keygen(harness)
    with pytest.raises(WorkflowFailureError) as err:
        await store(harness, "only-sia", b"x", networks=[Network.SIA])
    assert "0 verified replica(s) of only-sia, 1 required: sia: not_configured" in str(err.value.cause)
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.kind, entry.subject) == ("shelter.document.store_failed", "only-sia")


async def test_replica_audit_repairs_a_lost_replica(harness: Harness, tmp_path: Path) -> None:
    await keygen(harness)
    result = await store(harness, "ledger", b"balance sheet " * 100)
    cid = next(r.locator for r in result.replicas if r.network == Network.IPFS)
    for cached in (harness.settings.data_dir / "shelter" / "cache").iterdir():
        cached.unlink()  # the worker's own copy is gone too: the repair must come from Arweave
    ipfs = IpfsClient(harness.settings.ipfs_api_url)
    try:
        await ipfs.pin_rm(cid)
        await ipfs.repo_gc()
        assert await ipfs.cat(cid, timeout_s=2) is None
        audit: ReplicaAuditResult = await harness.client.execute_workflow(
            ReplicaAuditWorkflow.run, ReplicaAuditInput(document_ids=["ledger"]),
            id=f"replica-audit-{uuid.uuid4()}", task_queue=harness.task_queue)
        assert await ipfs.pinned(cid) and await ipfs.cat(cid) is not None
    finally:
        await ipfs.aclose()
    assert (audit.documents, audit.replicas_checked) == (1, 2)
    [finding] = audit.findings
    assert (finding.network, finding.state, finding.repaired) == (Network.IPFS, ReplicaState.MISSING, True)
    assert "repaired from arweave:" in finding.detail
    entry = (await harness.resources.audit.latest(1))[0]
    assert entry.kind == "shelter.replica_audit" and entry.payload["findings"][0]["repaired"] is True
    # a second audit (as the daily schedule starts it: no argument) finds everything healthy
    again: ReplicaAuditResult = await harness.client.execute_workflow(
        ReplicaAuditWorkflow.run, id=f"replica-audit-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert again.findings == [] and again.replicas_checked >= 2


async def test_a_network_that_is_down_is_recorded_and_the_others_still_store(
    harness: Harness, ipfs_api_url: str, arlocal_url: str
) -> None:
    """Sia pointed at a port where nothing listens (what a configured but stopped renterd looks like)."""
    await keygen(harness)
    dead = f"http://127.0.0.1:{free_port()}"
    settings = harness.settings.model_copy(update={"sia_url": dead, "sia_password": "pw"})
    async with open_replicators(settings) as replicators:
        assert Network.SIA in replicators
    # the harness worker has no sia_url; a second worker on another queue has the dead one
    async with open_resources(settings) as res, build_worker(harness.client, res, f"{harness.task_queue}-sia",
                                                               Metrics()):
        stage_document(settings.data_dir, "down", b"x" * 1000)
        state = await harness.client.execute_workflow(
            StoreDocumentWorkflow.run, StoreDocumentInput(document_id="down", replicate_attempts=2),
            id="document:down", task_queue=f"{harness.task_queue}-sia")
    by_net = {r.network: r for r in state.replicas}
    assert by_net[Network.IPFS].ok and by_net[Network.ARWEAVE].ok
    assert by_net[Network.SIA].state == ReplicaState.UNREACHABLE
    assert f"renterd at {dead} did not answer PUT" in by_net[Network.SIA].detail
