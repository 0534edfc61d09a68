"""A sheltered document for the access tests: encrypted and indexed exactly as `encrypt_document` does, with the
ciphertext kept by the test (the replication path has its own tests; here the requester's side is what counts)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from activities.sql.database import Database
from activities.sql.document_store import DocumentStore
from westworld import envelope
from westworld.shelter import DocumentRecord, EncryptedDocument, KeyEpoch, content_aad, data_key_aad


@dataclass
class Sheltered:
    record: DocumentRecord
    blob: bytes


async def seed_document(database: Database, epoch: KeyEpoch, plaintext: bytes) -> Sheltered:
    doc_id = f"doc-{uuid.uuid4().hex[:10]}"
    data_key = secrets.token_bytes(32)
    blob = envelope.encrypt_blob(data_key, secrets.token_bytes(12), plaintext, content_aad(doc_id))
    wrapped = envelope.seal(bytes.fromhex(epoch.master_public_key), data_key, data_key_aad(doc_id),
                            secrets.token_bytes(32), secrets.token_bytes(12))
    store = DocumentStore(database)
    await store.insert(EncryptedDocument(document_id=doc_id, title="test document", key_epoch=epoch.epoch,
                                         wrapped_key=wrapped, ciphertext_sha256=hashlib.sha256(blob).hexdigest(),
                                         size=len(blob), plaintext_size=len(plaintext)), "test")
    record = await store.get(doc_id)
    assert record is not None
    return Sheltered(record=record, blob=blob)
