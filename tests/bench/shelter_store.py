"""Shelter store throughput: `python -m tests.bench.shelter_store [--quick]`.

For each document size, the same random plaintexts are (a) added raw to a js-ipfs daemon with ``/api/v0/add``
(the floor) and (b) stored by the shelter's activities: stage, ``encrypt_document`` (fresh data key, AES-256-GCM,
key wrapped to the epoch's master public key, index row, cache) then ``replicate_document`` to the same daemon
(add + pin, then read back and hash). Raw adds and stores alternate, on one daemon in one run; the figure is
store throughput ÷ raw-add throughput (1.0 = no overhead), with the encrypt and replicate shares of the time.
The activities are called directly (ActivityEnvironment), so Temporal's own overhead is not in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.shelter_docs import IpfsReplicator, ShelterDocumentActivities, stage_document
from activities.shelter_keys import ShelterKeyActivities
from activities.sql.database import Database
from activities.storage.ipfs import IpfsClient
from tests.bench.lifecycle import stop_on_signals
from westworld import envelope
from westworld.shelter import CreateEpochInput, EncryptDocumentInput, Guardian, Network, ReplicateInput
from workers.stack import ipfs_daemon as ipfs
from workers.stack import processes

SIZES = ((16 * 1024, 30), (256 * 1024, 20), (1024 * 1024, 12), (4 * 1024 * 1024, 4))


def guardians(n: int) -> list[Guardian]:
    return [Guardian(id=f"g{i}", encryption_public_key=envelope.public_key(secrets.token_bytes(32)).hex(),
                     signing_public_key=secrets.token_bytes(32).hex()) for i in range(n)]


async def bench(base: Path, api_url: str, quick: bool) -> None:
    database = Database(f"sqlite+aiosqlite:///{base / 'bench.db'}")
    await database.migrate()
    env = ActivityEnvironment()
    await env.run(ShelterKeyActivities(database).create_key_epoch, CreateEpochInput(guardians=guardians(10)))
    client = IpfsClient(api_url)
    acts = ShelterDocumentActivities(database, base / "data", {Network.IPFS: IpfsReplicator(client)})
    print(f"{'size':>8} {'docs':>4} {'raw add MB/s':>13} {'store MB/s':>11} {'ratio':>6} "
          f"{'encrypt %':>9} {'replicate %':>11}")
    for size, count in SIZES:
        n = max(2, count // 3) if quick else count
        raw_times, store_times, enc_times = [], [], []
        for i in range(n):
            plain = secrets.token_bytes(size)
            t0 = time.perf_counter()
            await client.add(plain)
            raw_times.append(time.perf_counter() - t0)
            doc_id = f"bench-{size}-{i}-{secrets.token_hex(3)}"
            t0 = time.perf_counter()
            stage_document(base / "data", doc_id, plain)
            doc = await env.run(acts.encrypt_document, EncryptDocumentInput(document_id=doc_id))
            t1 = time.perf_counter()
            await env.run(acts.replicate_document, ReplicateInput(
                document_id=doc_id, ciphertext_sha256=doc.ciphertext_sha256, network=Network.IPFS))
            t2 = time.perf_counter()
            store_times.append(t2 - t0)
            enc_times.append(t1 - t0)
        mb = size / 1e6
        raw = mb / statistics.median(raw_times)
        stored = mb / statistics.median(store_times)
        enc_share = 100 * sum(enc_times) / sum(store_times)
        label = f"{size // 1024} KiB"
        print(f"{label:>8} {n:>4} {raw:>13.2f} {stored:>11.2f} {stored / raw:>6.2f} {enc_share:>9.0f} "
              f"{100 - enc_share:>11.0f}")
    await client.aclose()
    await database.close()


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a third of the documents per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="westworld-bench-shelter-") as tmp:
        base = Path(tmp)
        port = processes.free_port()
        proc = ipfs.start_ipfs(base / "ipfs", port, base / "ipfs.log")
        try:
            print(f"js-ipfs {ipfs.api_version(f'http://127.0.0.1:{port}')} on 127.0.0.1:{port}; "
                  "ratio = store throughput / raw /api/v0/add throughput of the same bytes (medians)")
            asyncio.run(bench(base, f"http://127.0.0.1:{port}", args.quick))
        finally:
            ipfs.stop(proc)


if __name__ == "__main__":
    main()
