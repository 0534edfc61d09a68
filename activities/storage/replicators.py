"""The storage networks behind one interface: put bytes idempotently (by content hash), get them back, discard a
corrupted copy. ``TRANSIENT`` are the clients' "did not answer" errors (retry, or report as unreachable)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from activities.storage.arweave import ArweaveClient
from activities.storage.ipfs import IpfsClient
from activities.storage.sia import SiaClient
from westworld.errors import ArweaveUnavailable, IpfsUnavailable, SiaUnavailable

TRANSIENT = (IpfsUnavailable, ArweaveUnavailable, SiaUnavailable)


class Replicator(Protocol):
    """One storage network: put bytes (idempotently, by content hash), get them back (None: the network lost them)."""

    async def put(self, data: bytes, sha256: str, document_id: str) -> str: ...

    async def get(self, locator: str) -> bytes | None: ...

    async def sha256(self, locator: str) -> str | None:
        """Hex SHA-256 of the replica as the network serves it, read back in full but never held whole (None: the
        network lost it): the read-back check of a put and of an audit."""

    async def discard(self, locator: str) -> None:
        """Drop a corrupted copy so a re-put writes fresh bytes (a no-op where a put overwrites)."""


class IpfsReplicator:
    def __init__(self, client: IpfsClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        return await self.client.add(data, pin=True)  # content addressed: a repeat returns the same CID

    async def get(self, locator: str) -> bytes | None:
        return await self.client.cat(locator)

    async def sha256(self, locator: str) -> str | None:
        return await self.client.cat_sha256(locator)

    async def discard(self, locator: str) -> None:
        # The blockstore keeps a block it already "has", even if its bytes rotted on disk: unpin and collect
        # so the next add writes the blocks again.
        await self.client.pin_rm(locator)
        await self.client.repo_gc()


class ArweaveReplicator:
    TAG = "Westworld-SHA256"

    def __init__(self, client: ArweaveClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        # a retried post must not pay twice: look for an earlier one while the anchor and fee are fetched
        existing, prepared = await asyncio.gather(self.client.find_by_tag(self.TAG, sha256),
                                                  self.client.prepare(len(data)))
        if existing is not None and await self.client.data_sha256(existing) == sha256:
            return existing
        return await self.client.post(data, {"Content-Type": "application/octet-stream", self.TAG: sha256,
                                             "Westworld-Document": document_id}, prepared)

    async def get(self, locator: str) -> bytes | None:
        return await self.client.data(locator)

    async def sha256(self, locator: str) -> str | None:
        return await self.client.data_sha256(locator)

    async def discard(self, locator: str) -> None:
        pass  # permanent storage: a repair posts a new transaction (found again by its content-hash tag)


class SiaReplicator:
    def __init__(self, client: SiaClient) -> None:
        self.client = client

    async def put(self, data: bytes, sha256: str, document_id: str) -> str:
        return await self.client.put(f"westworld/shelter/{sha256}", data)

    async def get(self, locator: str) -> bytes | None:
        return await self.client.get(locator)

    async def sha256(self, locator: str) -> str | None:
        return await self.client.get_sha256(locator)

    async def discard(self, locator: str) -> None:
        pass  # a PUT of the same key overwrites the object
