"""Vote benchmarks: `./dev bench votes`. Every figure is printed with its ratio to a floor
measured in the same run on the same server, because absolute times on these shared machines mean little.

1. votes accepted per second into one proposal through the update path ÷ no-op updates per second
2. p50 / p99 accept latency at 50 concurrent voters, and the same ratio to no-op update latency
3. `--big N` (default 100,000): N votes into one proposal: time, history events across runs, worker RSS
   (through the intake by default, `--big-via update` for the update path)
4. the vote intake (POST /v1/votes on the web process): accepted votes/s into one proposal ÷ the floor "verify one
   EIP-712 signature and insert one row"; p50 / p99 accept latency at 50 concurrent voters (tests/bench/intake.py)

Which clock: every figure here is caller-observed (the bench's wall clock around each call), never in-workflow
step time, except where a line says "in-workflow".
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.bench import intake
from tests.bench.lifecycle import stop_on_signals
from tests.bench.noop import NoopUpdateWorkflow
from tests.bench.voters import BenchVoters, make_voters
from westworld.keys import SEARCH_ATTRIBUTES, vote_id
from westworld.vote import DaoVoteInput, DaoVoteResult, Proposal, VoteReceipt, VoteRequest, VoteState
from workers.cli.vote import cast_with_retry
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.settings import Settings
from workers.stack import processes
from workers.worker import build_worker, open_resources
from workflows.dao_vote import DaoVoteWorkflow

CONCURRENCY = 50


async def drive(n: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, list[float]]:
    """Run ``call(i)`` for i in range(n) with CONCURRENCY in flight; (seconds, per-call latencies)."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def one() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start, latencies


def cast_from(handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult],
              votes: list[VoteRequest]) -> Callable[[int], Awaitable[VoteReceipt]]:
    async def call(i: int) -> VoteReceipt:
        return await cast_with_retry(handle, votes[i])

    return call


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


async def history_events(client: Client, workflow_id: str) -> tuple[int, int, int]:
    """(total events across runs, runs, max events in one run)."""
    total = runs = biggest = 0
    async for wf in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        hist = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        total += len(hist.events)
        biggest = max(biggest, len(hist.events))
        runs += 1
    return total, runs, biggest


async def open_vote(client: Client, tq: str, n_hint: int) -> WorkflowHandle[DaoVoteWorkflow, DaoVoteResult]:
    pid = f"bench-{uuid.uuid4().hex[:8]}"
    inp = DaoVoteInput(proposal=Proposal(id=pid, title="bench"), quorum=0.5, early_close=False)
    handle = await client.start_workflow(DaoVoteWorkflow.run, inp, id=vote_id(pid), task_queue=tq)
    while (await handle.query(DaoVoteWorkflow.status)).state is not VoteState.OPEN:
        await asyncio.sleep(0.05)
    return handle


async def bench(args: argparse.Namespace, work: Path) -> None:
    port = processes.free_port()
    log = work / "temporal.log"
    proc = processes.spawn(processes.temporal_args(
        db_file=work / "temporal.db", port=port, ui_port=None, http_port=processes.free_port(),
        metrics_port=processes.free_port(), search_attributes=SEARCH_ATTRIBUTES, time_skipping=True), log)
    voters: BenchVoters | None = None
    try:
        processes.wait_for_port(proc, port, "Temporal", log)
        t0 = time.perf_counter()
        voters = await make_voters(work, max(args.votes, args.intake_votes, args.big))
        print(f"voter setup (excluded from every figure): {time.perf_counter() - t0:.0f} s", flush=True)
        settings = Settings(data_dir=work, temporal_address=f"127.0.0.1:{port}", chain_rpc_url=voters.rpc_url)
        create_keyring(settings.resolved_codec_key_file)
        client = await Client.connect(settings.temporal_address,
                                      data_converter=build_data_converter(load_keyring(settings.resolved_codec_key_file)))
        tq = str(uuid.uuid4())
        async with open_resources(settings) as res:
            worker = build_worker(client, res, tq)
            floor = Worker(client, task_queue=tq + "-floor", workflows=[NoopUpdateWorkflow])
            async with worker, floor:
                await run_figures(client, tq, voters, args)
                if args.intake_votes:
                    await intake.figures(client, tq, settings, voters, args.intake_votes, work)
                if args.big and args.big_via == "intake":
                    await intake.big(client, tq, settings, voters, args.big, work, history_events)
    finally:
        processes.stop(proc)
        if voters is not None:
            voters.stop()


async def run_figures(client: Client, tq: str, voters: BenchVoters, args: argparse.Namespace) -> None:
    n = args.votes
    noop = await client.start_workflow(NoopUpdateWorkflow.run, id=f"noop-{uuid.uuid4()}", task_queue=tq + "-floor")
    await noop.execute_update(NoopUpdateWorkflow.touch, "warm")
    floor_s, floor_lat = await drive(n, lambda i: noop.execute_update(NoopUpdateWorkflow.touch, str(i)))
    await noop.signal(NoopUpdateWorkflow.finish)

    vote = await open_vote(client, tq, n)
    ctx = await vote.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    signed = voters.signed_votes(ctx, 0, n)
    vote_s, vote_lat = await drive(n, cast_from(vote, signed))
    await vote.terminate("bench done")

    floor_rate, vote_rate = n / floor_s, n / vote_s
    print(f"\n== {n} updates, {CONCURRENCY} concurrent callers, one proposal ==")
    print(f"floor: no-op update        {floor_rate:8.1f}/s   p50 {pct(floor_lat, 50)*1e3:6.1f} ms"
          f"   p99 {pct(floor_lat, 99)*1e3:6.1f} ms")
    print(f"votes accepted             {vote_rate:8.1f}/s   p50 {pct(vote_lat, 50)*1e3:6.1f} ms"
          f"   p99 {pct(vote_lat, 99)*1e3:6.1f} ms")
    print(f"ratio votes/s ÷ no-op/s    {vote_rate / floor_rate:8.2f}")
    print(f"ratio p50 vote ÷ p50 no-op {pct(vote_lat, 50) / pct(floor_lat, 50):8.2f}   "
          f"p99: {pct(vote_lat, 99) / pct(floor_lat, 99):.2f}   (design target: p50 < 100 ms per vote)")

    if args.big and args.big_via == "update":
        big = await open_vote(client, tq, args.big)
        ctx = await big.query(DaoVoteWorkflow.ballot_context)
        assert ctx is not None
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total = 0.0
        for start in range(0, args.big, 5000):
            chunk = voters.signed_votes(ctx, start, min(start + 5000, args.big))
            secs, _ = await drive(len(chunk), cast_from(big, chunk))
            total += secs
            done = start + len(chunk)
            print(f"   {done:>7} votes  {total:7.1f} s  ({done / total:.0f}/s)", flush=True)
        status = await big.query(DaoVoteWorkflow.status)
        await big.terminate("bench done")
        events, runs, biggest = await history_events(client, big.id)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"\n== {args.big} votes into one proposal ==")
        print(f"time {total:.1f} s ({args.big / total:.0f} votes/s = {args.big / total / floor_rate:.2f}× no-op rate)")
        print(f"history: {events} events over {runs} runs, largest run {biggest} events "
              f"({biggest / 51200:.1%} of Temporal's 51,200 limit); tallied votes {status.votes}")
        print(f"bench process (worker + clients) peak RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.0f} MiB)")


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="./dev bench votes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=1000, help="votes (and no-op updates) for figures 1-2")
    parser.add_argument("--big", type=int, default=100_000, help="votes for figure 3 (0 to skip)")
    parser.add_argument("--intake-votes", type=int, default=5000, help="votes for figure 4 (0 to skip)")
    parser.add_argument("--big-via", choices=("intake", "update"), default="intake",
                        help="the path figure 3's votes take")
    args = parser.parse_args()
    if not 10 <= args.votes <= 1500:
        parser.error("--votes must be 10..1500: the floor is one workflow, and Temporal admits 2,000 updates per run")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="westworld-bench-") as work:
        asyncio.run(bench(args, Path(work)))


if __name__ == "__main__":
    main()
