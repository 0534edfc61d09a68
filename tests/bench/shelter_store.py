"""Shelter store throughput: `python -m tests.bench.shelter_store [--quick]`.

For each document size, random plaintexts are stored by the shelter's activities: stage, ``encrypt_document``
(fresh data key, AES-256-GCM streamed from the staged file into the cache, key wrapped to the epoch's master public
key, index row) then ``replicate_document`` once per network, the networks in parallel as StoreDocumentWorkflow
runs them (each: put, read the replica back and hash it, record it). Two stores are timed:

* 1 replica: IPFS (a js-ipfs daemon);
* 2 replicas: IPFS and Arweave (arlocal), in parallel.

Floors, on the same daemons in the same run, interleaved with the stores, the same bytes:

* raw IPFS add: ``/api/v0/add`` (pinned) of the plaintext, nothing else: the floor the figures are given against;
* IPFS add + read-back: the add, then ``cat`` of it (no encryption, no index): the least any store that reads its
  replica back can take on this daemon, shown to tell the store's own overhead from the read-back's;
* parallel raw writes (2 replicas): the IPFS add and a plain Arweave post (anchor, fee, sign, ``POST /tx``, and on
  arlocal mint and mine) of the same bytes at once, with no read-back.

Each figure is store throughput ÷ floor throughput (medians of per-document time; 1.0 = no overhead). With one
replica, "÷ raw add" cannot pass "raw add ÷ (add + read-back)" (about 0.7 on js-ipfs: a ``cat`` costs 0.3-0.45 of
an add here): the read-back is kept, so "÷ add+cat" is the column that shows the store's own overhead. Times are
caller-observed around direct activity calls (``ActivityEnvironment``): no Temporal server, so no workflow or
activity scheduling in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.shelter_docs import (
    ArweaveReplicator,
    IpfsReplicator,
    ShelterDocumentActivities,
    stage_document,
)
from activities.shelter_keys import ShelterKeyActivities
from activities.sql.database import Database
from activities.storage.arweave import ArweaveClient, Wallet
from activities.storage.ipfs import IpfsClient
from tests.bench.lifecycle import stop_on_signals
from westworld import envelope
from westworld.shelter import CreateEpochInput, EncryptDocumentInput, Guardian, Network, ReplicateInput
from workers.settings import Settings
from workers.stack import arlocal, processes
from workers.stack import ipfs_daemon as ipfs
from workers.stack.supervisor import component, launch

SIZES = ((16 * 1024, 30), (256 * 1024, 20), (1024 * 1024, 12), (4 * 1024 * 1024, 4))


def guardians(n: int) -> list[Guardian]:
    return [Guardian(id=f"g{i}", encryption_public_key=envelope.public_key(secrets.token_bytes(32)).hex(),
                     signing_public_key=secrets.token_bytes(32).hex()) for i in range(n)]


async def timed(operation: Awaitable[object]) -> float:
    """Seconds until ``operation`` (a coroutine, which starts only when awaited) completes."""
    t0 = time.perf_counter()
    await operation
    return time.perf_counter() - t0


class Bench:
    def __init__(self, base: Path, acts: ShelterDocumentActivities, ipfs_client: IpfsClient,
                 arweave: ArweaveClient) -> None:
        self.base, self.acts, self.ipfs, self.arweave = base, acts, ipfs_client, arweave
        self.env = ActivityEnvironment()

    async def store(self, plain: bytes, networks: list[Network]) -> None:
        doc_id = f"bench-{len(plain)}-{secrets.token_hex(4)}"
        stage_document(self.base / "data", doc_id, plain)
        doc = await self.env.run(self.acts.encrypt_document, EncryptDocumentInput(document_id=doc_id))
        refs = await asyncio.gather(*(self.env.run(self.acts.replicate_document, ReplicateInput(
            document_id=doc_id, ciphertext_sha256=doc.ciphertext_sha256, network=net)) for net in networks))
        if not all(ref.ok for ref in refs):
            raise RuntimeError(f"a replica of {doc_id} was not verified: {refs}")

    async def add_and_read_back(self, plain: bytes) -> None:
        cid = await self.ipfs.add(plain)
        if await self.ipfs.cat(cid) != plain:
            raise RuntimeError(f"IPFS read back of {cid} differs")

    async def parallel_raw_writes(self, plain: bytes) -> None:
        await asyncio.gather(self.ipfs.add(plain), self.arweave.post(plain, {"Content-Type": "bench"}))

    async def size(self, size: int, n: int) -> dict[str, float]:
        times: dict[str, list[float]] = {k: [] for k in ("add", "add+cat", "raw2", "store1", "store2")}
        for _ in range(n):  # interleaved; fresh bytes of this size for every operation (a repeat would be deduped)
            a, b, c, d, e = (secrets.token_bytes(size) for _ in range(5))
            times["add"].append(await timed(self.ipfs.add(a)))
            times["store1"].append(await timed(self.store(b, [Network.IPFS])))
            times["add+cat"].append(await timed(self.add_and_read_back(c)))
            times["raw2"].append(await timed(self.parallel_raw_writes(d)))
            times["store2"].append(await timed(self.store(e, [Network.IPFS, Network.ARWEAVE])))
        return {k: statistics.median(v) for k, v in times.items()}


async def bench(base: Path, ipfs_url: str, arweave_url: str, quick: bool) -> None:
    database = Database(f"sqlite+aiosqlite:///{base / 'bench.db'}")
    await database.migrate()
    await ActivityEnvironment().run(ShelterKeyActivities(database).create_key_epoch,
                                    CreateEpochInput(guardians=guardians(10)))
    ipfs_client = IpfsClient(ipfs_url)
    arweave = ArweaveClient(arweave_url, Wallet.generate())
    acts = ShelterDocumentActivities(database, base / "data", {Network.IPFS: IpfsReplicator(ipfs_client),
                                                              Network.ARWEAVE: ArweaveReplicator(arweave)})
    b = Bench(base, acts, ipfs_client, arweave)
    await b.store(secrets.token_bytes(1024), [Network.IPFS, Network.ARWEAVE])  # warm up: connections, wallet
    print(f"{'':27} | {'1 replica (IPFS)':^21} | {'2 replicas (IPFS + Arweave, parallel)':^33}")
    print(f"{'size':>8} {'docs':>4} {'raw add MB/s':>13} | {'÷ raw add':>10} {'÷ add+cat':>10} | "
          f"{'÷ raw add':>10} {'÷ parallel raw writes':>22}")
    for size, count in SIZES:
        n = max(2, count // 3) if quick else count
        m = await b.size(size, n)
        label = f"{size // 1024} KiB"
        print(f"{label:>8} {n:>4} {size / 1e6 / m['add']:>13.2f} | {m['add'] / m['store1']:>10.2f} "
              f"{m['add+cat'] / m['store1']:>10.2f} | {m['add'] / m['store2']:>10.2f} {m['raw2'] / m['store2']:>22.2f}")
    await ipfs_client.aclose()
    await arweave.aclose()
    await database.close()


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a third of the documents per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="westworld-bench-shelter-") as tmp:
        base = Path(tmp)
        port, ar_port = processes.free_port(), processes.free_port()
        proc = ipfs.start_ipfs(base / "ipfs", port, base / "ipfs.log")
        s = Settings(data_dir=base, arweave_url=f"http://127.0.0.1:{ar_port}")
        ar_proc = launch(s, component(s, "arlocal"))  # as `westworld up` starts it
        try:
            print(f"js-ipfs {ipfs.api_version(f'http://127.0.0.1:{port}')} on 127.0.0.1:{port}, arlocal on "
                  f"127.0.0.1:{ar_port}. Caller-observed time of direct activity calls (no Temporal). Each figure: "
                  "store throughput ÷ a floor's throughput, same bytes, same daemons, same run (medians); every "
                  "replica of a store is read back and hashed, floors read nothing back except 'add+cat'")
            asyncio.run(bench(base, f"http://127.0.0.1:{port}", s.arweave_url, args.quick))
        finally:
            arlocal.stop(ar_proc)
            ipfs.stop(proc)


if __name__ == "__main__":
    main()
