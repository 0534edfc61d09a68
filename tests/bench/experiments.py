"""Benchmarks of the experiments part: `python -m tests.bench.experiments [--runs 3] [--steps 10]`.

Starts its own Temporal dev server, Prometheus and local mesh sandboxes (userspace mode), and a worker with the
part's workflows and activities. Every figure is printed with its ratio to a floor measured in the same run.

1. Canary reaction, in analysis intervals (in-workflow times: ``step_applied_at`` and ``rollback_started_at`` are
   ``workflow.now()`` of the workflow tasks, i.e. history event times, not what a caller observes). The faulty build
   (1.5.0-rc1) goes to one canary node of four, ``--runs`` times: *version live -> rollback started* is what users
   feel (it includes the time the build takes to drop its first relayed message, the scrape and the rate window);
   *breach -> rollback started* starts at the breach instant read back from Prometheus afterwards (the first
   instant at which the analysis query, evaluated at a fine step over the run, shows the canary failing). Flagger
   rolls back after ``interval x threshold`` failed checks. The good build (1.5.0) is rolled out ``--good-runs``
   times with the same metrics and analysis: every rollback there is a false one.
2. Orchestration overhead per canary step (set the version on one more node, audit it, decide) against bare
   Temporal activity calls in the same run: a no-op activity, and the same execute_mesh_action activity.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.sandbox.local import LocalSandbox
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from tests.bench.activity_floor import ActivityFloorWorkflow, FloorInput, FloorResult, bench_noop
from tests.bench.lifecycle import stop_on_signals
from westworld.canary import group_query, measure
from westworld.experiment import Direction, MetricSpec, Threshold
from westworld.keys import SEARCH_ATTRIBUTES, canary_id
from westworld.rollout import CanaryInput, CanaryResult, RolloutPhase
from westworld.sandbox import Arm, Backend, MeshAction, MeshActionInput, MeshTarget, ProvisionInput, Workload
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.interceptors import TypedFailureInterceptor
from workers.settings import Settings
from workers.stack import processes
from workers.stack.prometheus_server import start_prometheus
from workers.wiring import experiments as experiments_wiring
from workflows.canary import CanaryRolloutWorkflow
from workflows.runner_sandbox import workflow_runner

SCRAPE = 0.5
INTERVAL = timedelta(seconds=2)
RELAY_ERRORS = MetricSpec(name="relay_errors", query="sum(rate(mesh_relay_errors_total{selector}[3s])) or vector(0)",
                          threshold=Threshold(max=0.5), tolerance=0.5)
# Noisy on any build (a probe that times out on the loaded machine): the false-rollback check's reason to exist.
DELIVERY = MetricSpec(name="delivery_ratio", direction=Direction.HIGHER, threshold=Threshold(min=0.5), tolerance=0.05,
                      query="sum(rate(mesh_messages_delivered_total{selector}[3s])) / "
                            "sum(rate(mesh_messages_sent_total{selector}[3s]))", failure_limit=1)
METRICS = [RELAY_ERRORS, DELIVERY]
GOOD_BAKE = timedelta(seconds=8)


async def breach_to_rollback(client: Client, tq: str, http: httpx.AsyncClient, prom: str, runs: int) -> None:
    ratios, live_ratios = [], []
    for i in range(runs):
        inp = CanaryInput(name=f"bench-faulty-{i}-{uuid.uuid4().hex[:4]}", version="1.5.0-rc1", mesh_nodes=4,
                          mesh_version="1.4.0", steps=[1, "100%"], bake_time=timedelta(seconds=30),
                          analysis_interval=INTERVAL, metrics=METRICS)
        handle = await client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name), task_queue=tq)
        result: CanaryResult = await handle.result()
        st = result.status
        assert result.outcome is RolloutPhase.ROLLED_BACK and st.step_applied_at and st.rollback_started_at
        labels = {"sandbox": f"{inp.name}-mesh"}
        canary = result.rolled_back_nodes
        stable = [n.id for n in st.nodes if n.id not in canary]
        breach = await first_breach(http, prom, labels, canary, stable, st.step_applied_at, st.rollback_started_at)
        live = (st.rollback_started_at - st.step_applied_at) / INTERVAL
        live_ratios.append(live)
        if breach is None:
            print(f"   run {i}: rollback {live:.2f} intervals after the faulty version went live (breach instant "
                  f"not resolved in Prometheus): {result.reasons[0][:90]}")
            continue
        ratio = (st.rollback_started_at - breach) / INTERVAL
        ratios.append(ratio)
        print(f"   run {i}: version live -> breach visible {(breach - st.step_applied_at).total_seconds():.2f} s, "
              f"breach -> rollback started {(st.rollback_started_at - breach).total_seconds():.2f} s "
              f"= {ratio:.2f} x interval; live -> rollback {live:.2f} x interval")
    print(f"\n== canary reaction (analysis interval {INTERVAL.total_seconds():.0f} s, scrape {SCRAPE} s, "
          f"{runs} faulty runs; in-workflow times from history) ==")
    if ratios:
        print(f"breach -> rollback started   p50 {statistics.median(ratios):.2f} x interval   "
              f"max {max(ratios):.2f} x   (Flagger: threshold x interval, >= 1 x with threshold 1, 5 x at its "
              f"usual threshold 5)")
    print(f"version live -> rollback     p50 {statistics.median(live_ratios):.2f} x interval   "
          f"max {max(live_ratios):.2f} x   (includes the faulty build's first dropped message, the scrape and the "
          "rate window)")


async def false_rollbacks(client: Client, tq: str, runs: int) -> None:
    """The good build through the same analysis: how many rollouts roll back (each one is a false rollback)."""
    outcomes: list[CanaryResult] = []
    batch = 2  # a few at a time: 20 sequential runs would take minutes, many at once would load the 2 cores
    for first in range(0, runs, batch):
        handles = []
        for i in range(first, min(runs, first + batch)):
            inp = CanaryInput(name=f"bench-good-{i}-{uuid.uuid4().hex[:4]}", version="1.5.0", mesh_nodes=4,
                              mesh_version="1.4.0", steps=[1, "100%"], bake_time=GOOD_BAKE,
                              analysis_interval=INTERVAL, metrics=METRICS)
            handles.append(await client.start_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                                       task_queue=tq))
        outcomes += await asyncio.gather(*(h.result() for h in handles))
    false = [r for r in outcomes if r.outcome is not RolloutPhase.PROMOTED]
    for r in false:
        print(f"   false rollback ({r.outcome.value}): {'; '.join(r.reasons)[:160]}")
    print(f"false rollbacks {len(false)}/{runs} good runs   (good build 1.5.0, steps 1 then 100%, bake "
          f"{GOOD_BAKE.total_seconds():.0f} s each, same metrics and interval)")


async def first_breach(http: httpx.AsyncClient, prom: str, labels: dict[str, str], canary: list[str],
                       stable: list[str], start: datetime, end: datetime) -> datetime | None:
    """The first instant (0.1 s resolution) at which the analysis would have judged the canary failing. The range
    goes one step past the rollback: a breach seen right after a scrape falls between two steps of the grid."""
    async def series(nodes: list[str]) -> dict[float, float]:
        q = group_query(RELAY_ERRORS.query, labels, "node", nodes)
        r = await http.get(f"{prom}/api/v1/query_range", params={
            "query": q, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp() + 0.1:.3f}", "step": "0.1"})
        data = r.json()["data"]["result"]
        return {float(t): float(v) for t, v in data[0]["values"]} if data else {}

    can, stab = await series(canary), await series(stable)
    for t in sorted(can):
        if measure(RELAY_ERRORS, can[t], stab.get(t)).ok is False:
            return datetime.fromtimestamp(t, tz=start.tzinfo)
    return None


async def step_overhead(client: Client, tq: str, sandbox: LocalSandbox, steps: int) -> None:
    provision = ProvisionInput(backend=Backend.LOCAL, sandbox_id=f"bench-mesh-{uuid.uuid4().hex[:6]}",
                               arm=Arm.BASELINE, workload=Workload(version="1.4.0", nodes=steps))
    mesh = await sandbox.provision(provision, lambda _m: None)
    try:
        target = MeshTarget(backend=Backend.LOCAL, nodes=mesh.nodes)
        actions = [MeshActionInput(target=target, action=MeshAction.SET_VERSION, node_ids=[n.id], version="1.4.2",
                                   action_id=f"floor:{uuid.uuid4().hex}") for n in mesh.nodes]
        floor: FloorResult = await client.execute_workflow(
            ActivityFloorWorkflow.run, FloorInput(calls=steps * 2, actions=actions), id=f"floor-{uuid.uuid4()}",
            task_queue=tq)
        inp = CanaryInput(name=f"bench-steps-{uuid.uuid4().hex[:6]}", version="1.4.1", target=target,
                          steps=list(range(1, steps + 1)), bake_time=timedelta(0),
                          analysis_interval=timedelta(milliseconds=1))
        result: CanaryResult = await client.execute_workflow(CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name),
                                                             task_queue=tq)
        applied = [r.applied_at for r in result.status.history]
        per_step = statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(applied))
        print(f"\n== orchestration per canary step ({steps} steps, no analysis queries, same worker and server) ==")
        print(f"floor: bare no-op activity call       {floor.noop_s * 1e3:7.1f} ms")
        print(f"floor: bare execute_mesh_action call  {floor.mesh_action_s * 1e3:7.1f} ms")
        print(f"canary step (act + audit + decide)    {per_step * 1e3:7.1f} ms   = {per_step / floor.noop_s:.1f} x "
              f"no-op call, {per_step / floor.mesh_action_s:.1f} x the mesh action alone")
    finally:
        await sandbox.teardown(mesh)


async def bench(args: argparse.Namespace, work: Path) -> None:
    port = processes.free_port()
    log = work / "temporal.log"
    temporal = processes.spawn(processes.temporal_args(
        db_file=work / "temporal.db", port=port, ui_port=None, http_port=processes.free_port(),
        metrics_port=processes.free_port(), search_attributes=SEARCH_ATTRIBUTES), log)
    prom_port = processes.free_port()
    prometheus = start_prometheus(prom_port, work / "prometheus", SCRAPE)
    try:
        processes.wait_for_port(temporal, port, "Temporal", log)
        settings = Settings(data_dir=work, temporal_address=f"127.0.0.1:{port}", sandbox_namespaces=False,
                            prometheus_url=f"http://127.0.0.1:{prom_port}")
        assert settings.prometheus_targets_dir == work / "prometheus" / "targets"  # where this Prometheus looks
        create_keyring(settings.resolved_codec_key_file)
        client = await Client.connect(settings.temporal_address,
                                      data_converter=build_data_converter(load_keyring(settings.resolved_codec_key_file)))
        db = Database(settings.resolved_database_url)
        await db.migrate()
        tq = str(uuid.uuid4())
        try:
            async with experiments_wiring.open_activities(settings, db, AuditLog(db)) as acts, \
                    httpx.AsyncClient(timeout=10) as http:
                worker = Worker(client, task_queue=tq, workflow_runner=workflow_runner(),
                                workflows=[CanaryRolloutWorkflow, ActivityFloorWorkflow],
                                activities=[*acts, AuditActivities(AuditLog(db)).append_audit, bench_noop],
                                activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=4),
                                interceptors=[TypedFailureInterceptor()])
                async with worker:
                    sandbox = LocalSandbox(http, settings.data_dir, settings.prometheus_targets_dir, namespaces=False)
                    await step_overhead(client, tq, sandbox, args.steps)
                    await breach_to_rollback(client, tq, http, settings.resolved_prometheus_url, args.runs)
                    if args.good_runs:
                        await false_rollbacks(client, tq, args.good_runs)
        finally:
            await db.close()
    finally:
        processes.stop(temporal)
        processes.stop(prometheus)


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="Faulty rollouts for the reaction figures.")
    parser.add_argument("--good-runs", type=int, default=20, help="Good rollouts counted for false rollbacks.")
    parser.add_argument("--steps", type=int, default=10, help="Canary steps for the overhead figure.")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="westworld-bench-exp-") as work:
        asyncio.run(bench(args, Path(work)))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
