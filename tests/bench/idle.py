"""Many waiting workflows on one worker: `./dev bench idle` (= python -m tests.bench.idle).

For each workflow-cache size (``--caches``, default 100, the SDK's default 1,000, and N), on a fresh Temporal dev
server (the stack's flags) and a fresh worker process (the stack's sandbox settings), this bench

1. measures the worker process's RSS (/proc/PID/status VmRSS) with no workflows open;
2. runs ``--probes`` probe workflows one after another (a workflow that returns at once) and takes, from each one's
   history, the schedule-to-start latency of its first workflow task (WorkflowTaskScheduled -> WorkflowTaskStarted
   event times: in-workflow time as the server recorded it, not caller-observed);
3. starts N idle workflows (``--workflows``, default 10,000; each waits for a signal that never comes), printing the
   worker's RSS as they arrive, and waits until their first workflow tasks have run;
4. measures RSS again, then the same probe latency while the N wait, as a ratio to step 2 (same server, same worker).

Memory per workflow: an evicted workflow costs the worker nothing until its next task, when it is replayed from
history, so the worker holds min(N, cache) of them. Each section prints (RSS after - RSS before) / min(N, cache), which
also counts the worker's own growth under load (buffers, the allocator's high-water mark) and so overstates the cost
at small caches; the summary prints the slope between cache sizes, KiB per additional cached workflow, which does not.
The waiting workflow is the smallest one (one wait_condition, one bool of state); a real open vote holds more state
and a longer history.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tests.bench.lifecycle import stop_on_signals

STARTERS = 50  # concurrent start_workflow calls


@workflow.defn
class IdleWorkflow:
    """Waits for a signal that the bench never sends."""

    def __init__(self) -> None:
        self._woken = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._woken)

    @workflow.signal
    def wake(self) -> None:
        self._woken = True


@workflow.defn
class ProbeWorkflow:
    """Returns at once: its first workflow task's schedule-to-start is the latency probed."""

    @workflow.run
    async def run(self) -> None:
        return None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def start_worker(address: str, task_queue: str, cache: int) -> subprocess.Popen[bytes]:
    """The worker in a process of its own, so its RSS is the worker's alone (not the starters')."""
    return subprocess.Popen([sys.executable, "-m", "tests.bench.idle", "--serve-worker", address, task_queue,
                             str(cache)], stdout=subprocess.PIPE, start_new_session=True)


async def serve_worker(address: str, task_queue: str, cache: int) -> None:
    """The worker process: both workflows, the stack's sandbox, ``cache`` cached workflows at most."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    from workflows.runner_sandbox import workflow_runner

    client = await Client.connect(address)
    worker = Worker(client, task_queue=task_queue, workflows=[IdleWorkflow, ProbeWorkflow],
                    workflow_runner=workflow_runner(), max_cached_workflows=cache)
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


async def first_task_wait(client: object, workflow_id: str) -> float | None:
    """Seconds between the first WorkflowTaskScheduled and WorkflowTaskStarted events; None if not started yet."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    assert isinstance(client, Client)
    hist = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = started = None
    for ev in hist.events:
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and scheduled is None:
            scheduled = ev.event_time.ToDatetime()
        elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and started is None:
            started = ev.event_time.ToDatetime()
    if scheduled is None or started is None:
        return None
    return (started - scheduled).total_seconds()


async def probe(client: object, tq: str, n: int) -> list[float]:
    from temporalio.client import Client

    assert isinstance(client, Client)
    waits = []
    for _ in range(n):
        wid = f"probe-{uuid.uuid4().hex[:12]}"
        await client.execute_workflow(ProbeWorkflow.run, id=wid, task_queue=tq)
        wait = await first_task_wait(client, wid)
        assert wait is not None, f"{wid} completed without a started workflow task"
        waits.append(wait)
    return waits


async def one_cache(args: argparse.Namespace, cache: int, work: Path) -> dict[str, float]:
    from temporalio.client import Client

    from westworld.keys import SEARCH_ATTRIBUTES
    from workers.stack import processes

    port = processes.free_port()
    log = work / f"temporal-{cache}.log"
    server = processes.spawn(processes.temporal_args(
        db_file=work / f"temporal-{cache}.db", port=port, ui_port=None, http_port=processes.free_port(),
        metrics_port=processes.free_port(), search_attributes=SEARCH_ATTRIBUTES), log)
    worker: subprocess.Popen[bytes] | None = None
    try:
        processes.wait_for_port(server, port, "Temporal", log)
        address = f"127.0.0.1:{port}"
        tq = f"idle-{uuid.uuid4().hex[:8]}"
        worker = start_worker(address, tq, cache)
        assert worker.stdout is not None
        line = await asyncio.to_thread(worker.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"the worker process did not start (exit {worker.poll()})")
        client = await Client.connect(address)
        await probe(client, tq, 20)  # warm-up: sandbox, pollers, sticky queue
        base = await probe(client, tq, args.probes)
        rss0 = rss_mib(worker.pid)
        n = args.workflows
        print(f"\n== max_cached_workflows={cache}, {n} idle workflows ==")
        print(f"worker RSS with none open: {rss0:.1f} MiB", flush=True)

        ids = [f"idle-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
        next_i = 0
        report_every = max(n // 4, 1)
        t0 = time.perf_counter()

        async def starter() -> None:
            nonlocal next_i
            while next_i < n:
                i = next_i
                next_i += 1
                await client.start_workflow(IdleWorkflow.run, id=ids[i], task_queue=tq)
                if (i + 1) % report_every == 0:
                    print(f"   {i + 1:>7} started  {time.perf_counter() - t0:6.1f} s   worker RSS "
                          f"{rss_mib(worker.pid):7.1f} MiB", flush=True)

        assert worker is not None
        series: list[float] = []

        async def sample_rss() -> None:
            while True:
                series.append(rss_mib(worker.pid))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(*(starter() for _ in range(STARTERS)))
        start_s = time.perf_counter() - t0
        # The first workflow task of every idle workflow has run when the last-started ones and a random sample have
        # their WorkflowTaskStarted (the queue is served roughly in order).
        sample = ids[-20:] + random.sample(ids, min(50, n))
        for wid in sample:
            while await first_task_wait(client, wid) is None:
                await asyncio.sleep(0.2)
        settle_s = time.perf_counter() - t0
        sampler.cancel()
        print("worker RSS every 5 s while they started and ran their first task (MiB): "
              + " ".join(f"{v:.0f}" for v in series), flush=True)
        await asyncio.sleep(2)
        rss1 = rss_mib(worker.pid)
        loaded = await probe(client, tq, args.probes)
        rss2 = rss_mib(worker.pid)
        held = min(n, cache)
        print(f"started {n} in {start_s:.1f} s ({n / start_s:.0f}/s), first tasks run by {settle_s:.1f} s")
        print(f"worker RSS: {rss0:.1f} MiB before -> {rss1:.1f} MiB with {n} waiting ({rss2:.1f} after the probes); "
              f"+{rss1 - rss0:.1f} MiB = {(rss1 - rss0) * 1024 / held:.1f} KiB per cached workflow "
              f"({held} cached), {(rss1 - rss0) * 1024 / n:.2f} KiB per waiting workflow")
        print(f"first-workflow-task schedule-to-start (history event times, in-workflow, {args.probes} probes):")
        print(f"   no idle workflows     p50 {pct(base, 50) * 1e3:6.2f} ms   p99 {pct(base, 99) * 1e3:6.2f} ms")
        print(f"   {n} waiting     p50 {pct(loaded, 50) * 1e3:6.2f} ms   p99 {pct(loaded, 99) * 1e3:6.2f} ms")
        print(f"   ratio waiting ÷ none  p50 {pct(loaded, 50) / pct(base, 50):6.2f}      "
              f"p99 {pct(loaded, 99) / pct(base, 99):6.2f}", flush=True)
        return {"cache": cache, "rss0": rss0, "rss1": rss1, "held": held}
    finally:
        if worker is not None:
            processes.stop(worker)
        processes.stop(server)


async def bench(args: argparse.Namespace, work: Path) -> None:
    caches = [int(c) if c != "N" else args.workflows for c in args.caches.split(",")]
    rows = [await one_cache(args, c, work) for c in caches]
    print(f"\n== summary: {args.workflows} waiting workflows, worker RSS by cache size ==")
    for r in rows:
        print(f"   max_cached_workflows {int(r['cache']):>6}: {r['rss0']:7.1f} -> {r['rss1']:7.1f} MiB "
              f"(+{r['rss1'] - r['rss0']:.1f} MiB for {int(r['held'])} cached)")
    for a, b in itertools.pairwise(rows):
        if b["held"] != a["held"]:
            slope = (b["rss1"] - a["rss1"]) * 1024 / (b["held"] - a["held"])
            print(f"   from {int(a['held'])} to {int(b['held'])} cached: "
                  f"{slope:.1f} KiB per additional cached workflow")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-worker":
        asyncio.run(serve_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="./dev bench idle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=10_000, help="idle workflows per cache size")
    parser.add_argument("--caches", default="100,1000,N",
                        help="comma-separated max_cached_workflows values (N = --workflows; SDK default 1000)")
    parser.add_argument("--probes", type=int, default=200, help="probe workflows per latency figure")
    args = parser.parse_args()
    if args.workflows < 1 or args.probes < 2:
        parser.error("--workflows must be >= 1 and --probes >= 2")
    with tempfile.TemporaryDirectory(prefix="westworld-bench-idle-") as work:
        asyncio.run(bench(args, Path(work)))


if __name__ == "__main__":
    main()
