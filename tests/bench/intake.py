"""The vote intake's figures for `./dev bench votes` (POST /v1/votes on the web process `westworld up` starts).

Every time here is CALLER-OBSERVED (wall clock in the bench process, from sending a request to reading its answer)
unless it says in-workflow. The floor, measured in the same run on the same machine: verify one EIP-712 signature
and insert one row, in one process, one transaction per row.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from temporalio.client import Client, WorkflowHandle
from temporalio.testing._timeskipping import TimeSkipper, TimeSkippingConfig

from activities.sql.database import Database
from activities.sql.vote_store import VoteStore
from tests.bench.voters import TOKEN, BenchVoters
from westworld import ballot, merkle
from westworld.keys import vote_id
from westworld.vote import DaoVoteInput, DaoVoteResult, DaoVoteStatus, Proposal, VoteRequest, VoteState
from workers.settings import Settings
from workers.stack import processes
from workflows.dao_vote import DaoVoteWorkflow

CONCURRENCY = 50
CHUNK = 5000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def bare_floor_rate(settings: Settings, votes: list[VoteRequest], ctx: ballot.BallotContext) -> float:
    """THE floor, votes per second: verify one signature, insert one row and commit, with the bare sqlite3 driver
    on the project database's file and pragmas (WAL, synchronous=NORMAL), one process, no server around it."""
    if not settings.resolved_database_url.startswith("sqlite"):
        raise SystemExit("the bare floor is measured on SQLite (the embedded default)")
    path = Path(settings.resolved_database_url.split("///", 1)[1])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    table = f"bench_bare_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE TABLE {table} (vote_hash TEXT PRIMARY KEY, voter TEXT, payload TEXT)")
    try:
        start = time.perf_counter()
        for v in votes:
            h = ballot.verify(v, ctx)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (h, v.voter, v.model_dump_json()))  # noqa: S608
            conn.execute("COMMIT")
        return len(votes) / (time.perf_counter() - start)
    finally:
        conn.execute(f"DROP TABLE {table}")
        conn.close()


async def floor_rate(settings: Settings, votes: list[VoteRequest], ctx: ballot.BallotContext) -> float:
    """For context: the same through the project's async SQL layer (SQLAlchemy + aiosqlite), one row a
    transaction."""
    db = Database(settings.resolved_database_url)
    table = sa.Table(f"bench_floor_{uuid.uuid4().hex[:8]}", sa.MetaData(),
                     sa.Column("vote_hash", sa.String(66), primary_key=True), sa.Column("voter", sa.String(42)),
                     sa.Column("payload", sa.Text))
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
        start = time.perf_counter()
        for v in votes:
            h = ballot.verify(v, ctx)
            async with db.engine.begin() as conn:
                await conn.execute(sa.insert(table).values(vote_hash=h, voter=v.voter, payload=v.model_dump_json()))
        return len(votes) / (time.perf_counter() - start)
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await db.close()


class WebProcess:
    """The web process as `westworld up` runs it (its own process: its CPU and memory are its own)."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {f"WESTWORLD_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}
        env.update(WESTWORLD_DATA_DIR=str(settings.data_dir), WESTWORLD_WEB_PORT=str(self.port),
                   WESTWORLD_WORKER_METRICS_PORT=str(processes.free_port()))
        self.log = work / "web.log"
        with self.log.open("ab") as out:  # its own session: stop() ends it and its signature-check processes
            self.proc = subprocess.Popen([sys.executable, "-m", "workers.main", "web"], env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"web process exited: {self.log.read_text()[-3000:]}")
            try:
                async with http.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"web process not ready: {self.log.read_text()[-3000:]}")

    def peak_rss_mib(self) -> float:
        return _peak_rss_mib(self.proc.pid)

    async def commits(self, http: aiohttp.ClientSession) -> tuple[int, int]:
        """(ballots committed, transactions) as the web process counts them."""
        async with http.get(f"{self.url}/healthz") as r:
            body = await r.json()
        return int(body["ballots"]), int(body["transactions"])

    def cpu_seconds(self) -> float:
        """CPU time of the web process and its signature-check processes."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.proc.pid))

    def stop(self) -> None:
        processes.stop(self.proc)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _process_tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):  # gone meanwhile
                continue
    tree = [pid]
    for p in tree:  # grows while it is walked: children, then theirs
        tree += [child for child, parent in parents.items() if parent == p]
    return tree


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def post_all(http: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> tuple[float, list[float], int]:
    """POST every body with CONCURRENCY in flight; (seconds, per-request latencies, refusals)."""
    latencies: list[float] = []
    refused = 0
    it = iter(bodies)

    async def one() -> None:
        nonlocal refused
        for body in it:
            t0 = time.perf_counter()
            async with http.post(f"{url}/v1/votes", data=body, headers={"content-type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    refused += 1
                    if refused <= 3:
                        print(f"   refused {r.status}: {await r.text()}", flush=True)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start, latencies, refused


async def open_vote(client: Client, tq: str, window: timedelta | None = None) -> WorkflowHandle[DaoVoteWorkflow,
                                                                                                   DaoVoteResult]:
    pid = f"bench-{uuid.uuid4().hex[:8]}"
    inp = DaoVoteInput(proposal=Proposal(id=pid, title="bench"), quorum=0.5, early_close=False, voting_window=window)
    handle = await client.start_workflow(DaoVoteWorkflow.run, inp, id=vote_id(pid), task_queue=tq)
    while (await handle.query(DaoVoteWorkflow.status)).state is not VoteState.OPEN:
        await asyncio.sleep(0.05)
    return handle


def sign_bodies(voters: BenchVoters, ctx: ballot.BallotContext, n: int) -> list[bytes]:
    return [v.model_dump_json().encode() for start in range(0, n, CHUNK)
            for v in voters.signed_votes(ctx, start, min(start + CHUNK, n))]


async def figures(client: Client, tq: str, settings: Settings, voters: BenchVoters, n: int, work: Path) -> None:
    """Figures 4-5: intake votes/s into one proposal and its ratio to the floor; p50/p99 at 50 concurrent voters."""
    vote = await open_vote(client, tq)
    ctx = await vote.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    t0 = time.perf_counter()
    bodies = sign_bodies(voters, ctx, n)
    print(f"\n   (signed {n} ballots in {time.perf_counter() - t0:.1f} s, before timing)", flush=True)
    floor_n = min(n, 1000)
    floor_ctx = ctx.model_copy(update={"proposal_id": "floor"})
    floor_votes = voters.signed_votes(floor_ctx, 0, floor_n)
    bare = bare_floor_rate(settings, floor_votes, floor_ctx)
    floor = await floor_rate(settings, floor_votes, floor_ctx)
    web = WebProcess(settings, work)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as http:
            await web.ready(http)
            cpu_web, cpu_bench = web.cpu_seconds(), _cpu_seconds(os.getpid())
            secs, lat, refused = await post_all(http, web.url, bodies)
            cpu_web, cpu_bench = web.cpu_seconds() - cpu_web, _cpu_seconds(os.getpid()) - cpu_bench
            ballots, transactions = await web.commits(http)
            status = await _until_counted(vote, n - refused)
    finally:
        web.stop()
    await vote.terminate("bench done")
    rate = (n - refused) / secs
    print(f"\n== vote intake: {n} votes, {CONCURRENCY} concurrent callers, one proposal (caller-observed) ==")
    print(f"FLOOR: verify one EIP-712 signature + insert one row   {bare:8.1f}/s   (bare sqlite3, one process, "
          f"the intake's own ballot.verify, a transaction per row)")
    print(f"  (same through the async SQL layer, a row a transaction {floor:8.1f}/s)")
    print(f"intake accepted votes                                  {rate:8.1f}/s   refused {refused}")
    print(f"ratio intake ÷ floor                                   {rate / bare:8.2f}   (target ≥ 0.5, and ≥ 1,000/s)")
    print(f"accept latency p50 {pct(lat, 50) * 1e3:6.1f} ms   p99 {pct(lat, 99) * 1e3:6.1f} ms   (target p99 < 100 ms)")
    print(f"BATCHED (group commit): {ballots} ballots in {transactions} transactions "
          f"({ballots / max(transactions, 1):.1f} a transaction); each receipt is sent after its own transaction "
          f"committed")
    floor_cpu = 1e6 / bare  # the floor runs on one core: its CPU per vote is its time per vote
    print(f"CPU per accepted vote: web process (incl. signature-check processes) {cpu_web / (n - refused) * 1e6:6.0f} "
          f"us = {cpu_web / (n - refused) * 1e6 / floor_cpu:.1f}× the floor's; bench process (HTTP client, worker) "
          f"{cpu_bench / (n - refused) * 1e6:6.0f} us  (2 cores, shared with Temporal, anvil and other jobs)")
    print(f"workflow tally after the hint: {status.votes} votes (store-kept; the workflow read it)")


async def _until_counted(handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult], n: int,
                         timeout: float = 60.0) -> DaoVoteStatus:
    deadline = time.perf_counter() + timeout
    while True:
        status = await handle.query(DaoVoteWorkflow.status)
        if status.votes >= n or time.perf_counter() > deadline:
            return status
        await asyncio.sleep(0.1)


async def big(client: Client, tq: str, settings: Settings, voters: BenchVoters, n: int, work: Path,
              history_events: Callable[[Client, str], Awaitable[tuple[int, int, int]]]) -> None:
    """Figure 6: N votes into one proposal through the intake, end to end: ingestion, the workflow's close (its
    deadline skipped to), the tally against an independent recount, the result root recomputed."""
    skipper = TimeSkipper(client, config=TimeSkippingConfig(enabled=False))
    handle = await open_vote(skipper.client, tq, window=timedelta(hours=72))
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    t0 = time.perf_counter()
    bodies = sign_bodies(voters, ctx, n)
    expected_hashes = {acct.address.lower(): None for acct in voters.accounts[:n]}
    print(f"\n   (signed {n} ballots in {time.perf_counter() - t0:.0f} s, before timing)", flush=True)
    web = WebProcess(settings, work)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as http:
            await web.ready(http)
            start = time.perf_counter()
            total_refused = 0
            for i in range(0, n, 10_000):
                _, _, refused = await post_all(http, web.url, bodies[i:i + 10_000])
                total_refused += refused
                done = min(i + 10_000, n)
                el = time.perf_counter() - start
                print(f"   {done:>7} votes  {el:7.1f} s  ({done / el:.0f}/s)", flush=True)
            ingest = time.perf_counter() - start
            web_rss = web.peak_rss_mib()
    finally:
        web.stop()
    status = await _until_counted(handle, n - total_refused)
    t_close = time.perf_counter()
    await skipper.fast_forward(handle, timedelta(hours=72, minutes=1))
    result = await handle.result()
    close_s = time.perf_counter() - t_close
    end_to_end = time.perf_counter() - start
    db = Database(settings.resolved_database_url)
    try:
        store = VoteStore(db)
        recount = await store.recount(result.proposal_id, ["for", "against", "abstain"])
        hashes = await store.vote_hashes(result.proposal_id)
        stored = await store.count(result.proposal_id)
    finally:
        await db.close()
    # Independent of the intake and the store's tally: every bench voter holds TOKEN and voted "for"; the root is
    # over the ballots' hashes computed here from what was signed, ordered by voter.
    independent = {"for": n * TOKEN, "against": 0, "abstain": 0}
    mine = [ballot.vote_hash(VoteRequest.model_validate_json(b), ctx) for b in bodies]
    order = sorted(range(n), key=lambda i: voters.accounts[i].address.lower())
    root_here = merkle.root([bytes.fromhex(mine[i].removeprefix("0x")) for i in order]).hex()
    events, runs, biggest = await history_events(client, handle.id)
    print(f"\n== {n} votes into one proposal through the intake, end to end (caller-observed) ==")
    print(f"ingestion {ingest:.1f} s ({n / ingest:.0f} votes/s), refused {total_refused}; the workflow counted "
          f"{status.votes} (in-workflow tally read from the store)")
    print(f"close (deadline skipped to -> result, audited) {close_s:.1f} s; end to end {end_to_end:.1f} s")
    print(f"tally {result.tally}")
    print(f"  = store recount from stored ballots: {result.tally == recount}   = independent ({n} × 1 token "
          f"'for'): {result.tally == independent}   stored ballots {stored} (voters {len(expected_hashes)})")
    print(f"result root {result.votes_root[:16]}… = recomputed from the store: "
          f"{result.votes_root == merkle.root([bytes.fromhex(h.removeprefix('0x')) for h in hashes]).hex()}"
          f"   = recomputed from the signed ballots here: {result.votes_root == root_here}")
    print(f"history: {events} events over {runs} runs, largest run {biggest} events")
    print(f"web process peak RSS {web_rss:.0f} MiB; bench process (worker + clients) peak RSS "
          f"{_peak_rss_mib(os.getpid()):.0f} MiB")
