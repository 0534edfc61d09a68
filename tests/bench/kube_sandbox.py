"""Benchmark of the kubernetes sandbox backend: `python -m tests.bench.kube_sandbox [--runs 10]`.

Starts its own etcd + kube-apiserver (tests/fixtures/kube.py; build the binary first with
deploy/kube/build-apiserver.sh). Every figure is the median over the runs, printed with its ratio to the floor
measured in the same run: one raw server-side apply of a Namespace through the kubernetes client's typed API
(`CoreV1Api.patch_namespace`, no wrapper of ours). No Pod runs here (no kubelet), so this measures API work only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s

from activities.sandbox.kubernetes import KubernetesSandbox
from tests.bench.lifecycle import stop_on_signals
from tests.fixtures.kube import DEPLOY_DIR, local_cluster, missing_reason
from westworld.sandbox import (
    Arm,
    Backend,
    Fault,
    FaultInput,
    FaultKind,
    MeshAction,
    MeshActionInput,
    MeshTarget,
    ProvisionInput,
    SandboxRef,
    Workload,
)

T = TypeVar("T")


async def timed(call: Awaitable[T]) -> tuple[float, T]:
    """Seconds an awaitable takes (a coroutine does nothing until awaited), and its value."""
    start = time.perf_counter()
    value = await call
    return time.perf_counter() - start, value


def provision_input() -> ProvisionInput:
    return ProvisionInput(backend=Backend.KUBERNETES, sandbox_id=f"b{uuid.uuid4().hex[:10]}", arm=Arm.BASELINE,
                          workload=Workload(version="1.4.0", nodes=5, config={"MESH_MTU": "1400"}),
                          egress_allow=["10.0.0.0/8", "192.0.2.7:443"])


def set_version(ref: SandboxRef, nodes: int, version: str) -> MeshActionInput:
    target = MeshTarget(backend=Backend.KUBERNETES, namespace=ref.namespace, kind="Deployment", name="mesh-node",
                        nodes=ref.nodes)
    return MeshActionInput(target=target, action=MeshAction.SET_VERSION, node_ids=[n.id for n in ref.nodes[:nodes]],
                           version=version, action_id=f"bench:{uuid.uuid4().hex[:6]}")


async def run(runs: int) -> None:
    with local_cluster() as cluster:
        api = cluster.api_client()
        core = k8s.CoreV1Api(api)
        backend = KubernetesSandbox(api)
        for doc in yaml.safe_load_all((DEPLOY_DIR / "chaos-mesh-crds.yaml").read_text()):
            backend.kube.request(
                "PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                "install CRD", body=doc, query=[("fieldManager", "bench"), ("force", "true")],
                content_type="application/apply-patch+yaml")
        while len(backend.kube.chaos_kinds()) < 2:
            await asyncio.sleep(0.2)

        def raw_apply() -> Awaitable[object]:
            name = f"floor-{uuid.uuid4().hex[:8]}"
            body: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            return asyncio.to_thread(core.patch_namespace, name, body, field_manager="bench", force=True,
                                     _content_type="application/apply-patch+yaml")

        figures: dict[str, list[float]] = {k: [] for k in (
            "floor", "provision", "provision again (no-op)", "apply_fault", "canary step (1 of 5)",
            "rollback (fold canary back)", "set_version whole", "teardown")}

        def add(name: str, measured: tuple[float, object]) -> None:
            figures[name].append(measured[0])

        for _ in range(runs):
            add("floor", await timed(raw_apply()))
            inp = provision_input()
            seconds, ref = await timed(backend.provision(inp, lambda _: None))
            figures["provision"].append(seconds)
            add("provision again (no-op)", await timed(backend.provision(inp, lambda _: None)))
            fault = FaultInput(sandbox=ref, fault=Fault(kind=FaultKind.LATENCY, duration=timedelta(seconds=30),
                                                        latency_ms=50), fault_id=f"bench-{uuid.uuid4().hex[:6]}")
            add("apply_fault", await timed(backend.apply_fault(fault)))
            add("canary step (1 of 5)", await timed(backend.execute_mesh_action(set_version(ref, 1, "1.5.0"))))
            add("rollback (fold canary back)",
                await timed(backend.execute_mesh_action(set_version(ref, 5, "1.4.0"))))
            add("set_version whole", await timed(backend.execute_mesh_action(set_version(ref, 5, "1.5.0"))))
            add("teardown", await timed(backend.teardown(ref)))

        floor = statistics.median(figures.pop("floor"))
        print(f"kube-apiserver 1.20.2 + etcd on loopback, {runs} runs, medians, caller-observed (each activity "
              f"method called directly and timed around the call; no Temporal here); floor: one raw server-side "
              f"apply (CoreV1Api.patch_namespace) = {floor * 1000:.1f} ms")
        for name, values in figures.items():
            median = statistics.median(values)
            print(f"  {name:<30} {median * 1000:8.1f} ms   {median / floor:6.1f}x the floor")


def main() -> int:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    reason = missing_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    asyncio.run(run(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
