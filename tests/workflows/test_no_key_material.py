"""After a real access, an emergency access and a rotation: no key material anywhere the server keeps things.

Scanned: every workflow history of the run (raw, as a key-less client fetches it, AND every payload decoded with
the codec key), every log record emitted in this process (worker, activities, SDK) at DEBUG, the log files under
the session's temp dir (the Temporal server's), the notifications file, and the SQLite database file with its
WAL. Looked for: the master key, every clear share (old and new epoch), every guardian's and the requester's
private keys, the rotation key, the document's data key and its plaintext, each as raw bytes, hex (both cases)
and base64 (standard and URL-safe, padded or not). Positive controls show the scanner does see what is there.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import answer, make_guardians, open_own_share, seed_document
from tests.workflows.test_document_access import approved
from tests.workflows.test_emergency_access import start as start_emergency
from tests.workflows.test_emergency_access import vote_for
from tests.workflows.test_guardian_rotation import start as start_rotation
from westworld import envelope
from westworld.rotation import GuardianRotationInput, RotationPhase
from westworld.shelter import data_key_aad
from westworld.shelter_access import AccessDecision
from workers.cli.shelter_keys import PartyKeys, acknowledge, make_keys
from workflows.guardian_rotation import GuardianRotationWorkflow


def forms(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="), url,
            url.rstrip(b"=")]


def party_secrets(k: PartyKeys) -> list[bytes]:
    return [bytes.fromhex(k.encryption_private_key), bytes.fromhex(k.signing_private_key)]


def iter_payloads(msg: Message) -> Iterator[Payload]:
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        items = value.values() if field.message_type.GetOptions().map_entry else (
            value if field.is_repeated else [value])
        for item in items:
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from iter_payloads(item)


def hits(blob: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [f"{name} ({i})" for name, s in secrets.items() for i, f in enumerate(forms(s)) if f in blob]


async def test_no_key_material_in_histories_logs_or_database(
    harness: Harness, temporal_client: Client, caplog: pytest.LogCaptureFixture,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    caplog.set_level(logging.DEBUG)
    g = await make_guardians(harness)
    plaintext = b"list of safe houses: 12 Elm St, 4 Oak Rd"
    doc = await seed_document(harness, g, plaintext)
    # a normal access, granted and opened
    handle = await approved(harness, g, doc)
    for keys in g.keys[:3]:
        await answer(handle, keys)
    assert (await handle.result()).decision is AccessDecision.GRANTED
    # an emergency access, granted (reminders go to the notifications file: no webhook configured)
    emergency = await start_emergency(harness, g, doc)
    for keys in g.keys[5:8]:
        await answer(emergency, keys)
    vote_handle = await vote_for(harness, emergency, "for")
    await harness.skipper.fast_forward(vote_handle, timedelta(hours=1, minutes=1))
    assert (await emergency.result()).decision is AccessDecision.GRANTED
    # a rotation to a new set; the rotation key is captured while it exists
    new = [make_keys(f"n{i}") for i in range(1, 6)]
    rot = await start_rotation(harness, GuardianRotationInput(new_guardians=[n.public() for n in new]),
                               g.epoch.epoch)
    rotation_keys = [bytes.fromhex(p.read_text().strip())
                     for p in (harness.settings.data_dir / "shelter" / "rotation").glob("*.key")]
    for keys in g.keys[3:6]:
        await answer(handle=rot, keys=keys)
    await eventually(lambda: rot.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
    for keys in new:
        task = await rot.query(GuardianRotationWorkflow.ack_task, keys.id)
        assert task is not None
        await rot.execute_update(GuardianRotationWorkflow.acknowledge, acknowledge(keys, task))
    rotated = await rot.result()
    assert rotated.phase is RotationPhase.COMPLETED

    master = g.master_key()
    from activities.sql.key_epoch_store import KeyEpochStore

    new_epoch = await KeyEpochStore(harness.resources.database).current()
    assert new_epoch is not None
    secret: dict[str, bytes] = {"master key": master, "document plaintext": plaintext,
                                "data key": envelope.open_sealed(master, doc.record.wrapped_key,
                                                                 data_key_aad(doc.record.document_id))}
    for k in g.keys:
        secret[f"old share of {k.id}"] = open_own_share(k, g.epoch).value
    for k in new:
        secret[f"new share of {k.id}"] = open_own_share(k, new_epoch).value
    for k in [*g.keys, *new, g.requester]:
        x, ed = party_secrets(k)
        secret[f"{k.id} X25519 private"], secret[f"{k.id} Ed25519 private"] = x, ed
    assert rotation_keys, "the rotation key file was not seen"
    secret |= {f"rotation key {i}": r for i, r in enumerate(rotation_keys)}

    # 1. histories, raw and decoded
    codec = harness.client.data_converter.payload_codec
    assert codec is not None
    found: list[str] = []
    decoded_all = b""
    workflows = [wf async for wf in temporal_client.list_workflows(f'TaskQueue = "{harness.task_queue}"')]
    assert {wf.workflow_type for wf in workflows} >= {"DocumentAccessWorkflow", "EmergencyAccessWorkflow",
                                                      "DaoVoteWorkflow", "GuardianRotationWorkflow"}
    for wf in workflows:
        history = await temporal_client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        raw = history.to_json().encode() + b"".join(e.SerializeToString() for e in history.events)
        found += [f"raw history of {wf.id}: {h}" for h in hits(raw, secret)]
        payloads = [p for e in history.events for p in iter_payloads(e)]
        decoded = await codec.decode(payloads)
        blob = b"".join(p.data for p in decoded)
        decoded_all += blob
        found += [f"decoded history of {wf.id}: {h}" for h in hits(blob, secret)]
    # positive control: decoding works (public keys and sealed shares are there in clear once decoded)
    assert g.requester.public().encryption_public_key.encode() in decoded_all
    assert g.epoch.master_public_key.encode() in decoded_all
    assert "master key (3)" in hits(decoded_all + base64.b64encode(master), secret)  # the scanner itself
    assert (harness.settings.data_dir / "shelter" / "notifications.jsonl").exists()
    # 2. logs of this process (worker, activities, SDK) and log files on disk
    log_text = "\n".join(r.getMessage() + " " + repr(r.args) for r in caplog.records).encode()
    assert log_text, "no log records captured"
    found += [f"log record: {h}" for h in hits(log_text, secret)]
    files = [*tmp_path_factory.getbasetemp().rglob("*.log"), *harness.settings.data_dir.rglob("*.jsonl")]
    for f in files:
        found += [f"{f.name}: {h}" for h in hits(f.read_bytes(), secret)]
    # 3. the database file and its WAL
    db_files = [p for p in harness.settings.data_dir.glob("westworld.db*") if p.is_file()]
    assert db_files, "no SQLite database found"
    db_bytes = b"".join(p.read_bytes() for p in db_files)
    assert g.epoch.master_public_key.encode() in db_bytes  # positive control: the public epoch is stored
    found += [f"database: {h}" for h in hits(db_bytes, secret)]
    assert found == [], "key material found:\n" + "\n".join(found)
    assert not list((harness.settings.data_dir / "shelter" / "rotation").glob("*.key"))
