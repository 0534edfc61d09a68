"""The shelter's storage clients, built from settings: one replicator per configured network (IPFS, Arweave, Sia).

An empty URL leaves that network out; a store then records its replica as not configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from activities.shelter_docs import (
    ArweaveReplicator,
    IpfsReplicator,
    Replicator,
    ShelterDocumentActivities,
    SiaReplicator,
)
from activities.shelter_keys import ShelterKeyActivities
from activities.sql.database import Database
from activities.storage.arweave import ArweaveClient
from activities.storage.ipfs import IpfsClient
from activities.storage.sia import SiaClient
from westworld.shelter import Network
from workers.settings import Settings


def arweave_wallet_file(settings: Settings) -> Path:
    return settings.arweave_wallet_file or settings.data_dir / "shelter" / "arweave-wallet.json"


@contextlib.asynccontextmanager
async def open_replicators(settings: Settings) -> AsyncIterator[dict[Network, Replicator]]:
    async with contextlib.AsyncExitStack() as stack:
        replicators: dict[Network, Replicator] = {}
        if settings.ipfs_api_url:
            ipfs = IpfsClient(settings.ipfs_api_url)
            stack.push_async_callback(ipfs.aclose)
            replicators[Network.IPFS] = IpfsReplicator(ipfs)
        if settings.arweave_url:
            arweave = ArweaveClient(settings.arweave_url, arweave_wallet_file(settings))
            stack.push_async_callback(arweave.aclose)
            replicators[Network.ARWEAVE] = ArweaveReplicator(arweave)
        if settings.sia_url:
            sia = SiaClient(settings.sia_url, settings.sia_password)
            stack.push_async_callback(sia.aclose)
            replicators[Network.SIA] = SiaReplicator(sia)
        yield replicators


@contextlib.asynccontextmanager
async def open_document_activities(settings: Settings, database: Database) -> AsyncIterator[ShelterDocumentActivities]:
    """The document activities with their storage clients (closed on exit); also for the CLI's `open`."""
    async with open_replicators(settings) as replicators:
        yield ShelterDocumentActivities(database, settings.data_dir, replicators)


@contextlib.asynccontextmanager
async def open_storage_activities(settings: Settings, database: Database) -> AsyncIterator[list[Any]]:
    """The key-ceremony and document activities, bound, for the worker."""
    keys = ShelterKeyActivities(database)
    async with open_document_activities(settings, database) as docs:
        yield [
            # create_key_epoch (unchecked) is not served: ceremonies create through the checked activity
            keys.create_ceremony_epoch, keys.key_epoch_status, keys.current_key_epoch, keys.get_key_epoch,
            keys.retire_key_epoch,
            docs.encrypt_document, docs.replicate_document, docs.verify_replicas, docs.repair_replica,
            docs.list_documents, docs.get_document,
        ]
