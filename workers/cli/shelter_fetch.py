"""Fetching a document's ciphertext for `westworld shelter open`: from each of its replicas in turn (the networks
configured here: IPFS, Arweave, Sia), keeping the first copy whose SHA-256 matches the index."""

from __future__ import annotations

import hashlib

from activities.shelter_docs import TRANSIENT
from westworld.errors import DecryptFailed, WestworldError
from westworld.shelter import DocumentRecord
from workers.settings import Settings
from workers.wiring.shelter_storage import open_replicators


async def fetch_ciphertext(s: Settings, doc: DocumentRecord) -> tuple[bytes, str]:
    """(ciphertext, where from). Raises DecryptFailed naming every replica tried when none verifies."""
    tried: list[str] = []
    async with open_replicators(s) as replicators:
        for ref in doc.replicas:
            replicator = replicators.get(ref.network)
            if replicator is None or not ref.locator:
                tried.append(f"{ref.network.value}: not configured here")
                continue
            try:
                data = await replicator.get(ref.locator)
            except (*TRANSIENT, WestworldError) as err:
                tried.append(f"{ref.network.value} {ref.locator}: {err}")
                continue
            if data is None:
                tried.append(f"{ref.network.value} {ref.locator}: missing")
            elif (got := hashlib.sha256(data).hexdigest()) != doc.ciphertext_sha256:
                tried.append(f"{ref.network.value} {ref.locator}: SHA-256 {got[:16]}… is not the indexed one")
            else:
                return data, f"{ref.network.value} {ref.locator}"
    raise DecryptFailed(f"no replica of document {doc.document_id} gave the indexed ciphertext: "
                        + ("; ".join(tried) or "it has no replicas"))
