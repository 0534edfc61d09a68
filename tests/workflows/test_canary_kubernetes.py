"""CanaryRolloutWorkflow on a Kubernetes Deployment: a real Temporal server and worker (its kubernetes backend
configured by the ``kube_config`` setting) against a real kube-apiserver and etcd, analysis by a real Prometheus.

No Pod runs on the test apiserver (no kubelet), so the mesh-node metrics of the Deployment do not exist here. The
analysed metric is therefore a query over what does exist (``count(up{selector})``, empty for these labels) with a
constant fallback: ``or vector(0)`` passes its threshold, ``or vector(5)`` breaks it. What is checked is what the
workflow does to the Deployment: the canary copy and the stable Deployment's scale while baking, the promotion,
and the automatic rollback to the previous version.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from activities.sandbox.kube_api import KubeApi, client_from_kubeconfig
from activities.sandbox.kubernetes import KubernetesSandbox
from tests.fixtures.kube import KubeCluster
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.conftest import Harness, eventually
from tests.workflows.experiments_support import unique
from westworld import kube_objects as ko
from westworld.experiment import MetricSpec, Threshold
from westworld.keys import canary_id
from westworld.rollout import CanaryInput, CanaryResult, RolloutPhase
from westworld.sandbox import Arm, Backend, MeshTarget, ProvisionInput, SandboxRef, Workload
from workflows.canary import CanaryRolloutWorkflow

Handle = WorkflowHandle[CanaryRolloutWorkflow, CanaryResult]
IMAGE = "registry.example/westworld/mesh-node"


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, kube_cluster: KubeCluster, tmp_path: Path) -> dict[str, Any]:
    return {"prometheus_url": prometheus.url, "sandbox_namespaces": False, "kube_config": str(kube_cluster.kubeconfig)}


def metric(fallback: int) -> MetricSpec:
    return MetricSpec(name="pods_up", query=f"count(up{{selector}}) or vector({fallback})",
                      threshold=Threshold(max=1), compare_to_baseline=False)


async def deployment(kube_cluster: KubeCluster, nodes: int = 4) -> tuple[SandboxRef, KubeApi]:
    backend = KubernetesSandbox(client_from_kubeconfig(kube_cluster.kubeconfig))
    ref = await backend.provision(ProvisionInput(
        backend=Backend.KUBERNETES, sandbox_id=unique("canary"), arm=Arm.BASELINE,
        workload=Workload(version="1.4.0", nodes=nodes, image=IMAGE)), lambda _: None)
    return ref, backend.kube


def rollout(ref: SandboxRef, fallback: int, **fields: Any) -> CanaryInput:
    target = MeshTarget(backend=Backend.KUBERNETES, namespace=ref.namespace, kind="Deployment",
                        name=ko.WORKLOAD_NAME)
    return CanaryInput(name=unique("k8s"), version="1.5.0", target=target, replicas=len(ref.nodes),
                       steps=["25%", "100%"], metrics=[metric(fallback)],
                       canary_labels={"track": "canary"}, stable_labels={"track": ""}, **fields)


def live(kube: KubeApi, ns: str, name: str = ko.WORKLOAD_NAME) -> dict[str, Any] | None:
    return kube.get("Deployment", name, ns)


def image(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_deployment_canary_bakes_then_is_promoted(harness: Harness, kube_cluster: KubeCluster) -> None:
    ref, kube = await deployment(kube_cluster)
    ns = str(ref.namespace)
    inp = rollout(ref, 0)  # real defaults: 10 min bake per step, analysis every minute; time-skipped below
    handle: Handle = await harness.skipper.client.start_workflow(
        CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name), task_queue=harness.task_queue)
    baking = await eventually(lambda: handle.query(CanaryRolloutWorkflow.status),
                              lambda s: s.phase is RolloutPhase.BAKING, timeout=60)
    assert (baking.step, baking.on_new_version, baking.total_nodes) == (0, 1, 4)
    canary = live(kube, ns, ko.WORKLOAD_NAME + ko.CANARY_SUFFIX)
    assert canary is not None and canary["spec"]["replicas"] == 1 and image(canary) == f"{IMAGE}:1.5.0"
    stable = live(kube, ns)
    assert stable is not None and stable["spec"]["replicas"] == 3 and image(stable) == f"{IMAGE}:1.4.0"

    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    await eventually(lambda: handle.query(CanaryRolloutWorkflow.status), lambda s: s.step == 1, timeout=60)
    await harness.skipper.fast_forward(handle, timedelta(minutes=11))
    result = await handle.result()
    assert result.outcome is RolloutPhase.PROMOTED, result.reasons
    promoted = live(kube, ns)
    assert promoted is not None and image(promoted) == f"{IMAGE}:1.5.0" and promoted["spec"]["replicas"] == 4
    assert promoted["metadata"]["annotations"][ko.ANNOTATION_PREVIOUS] == "1.4.0"
    assert live(kube, ns, ko.WORKLOAD_NAME + ko.CANARY_SUFFIX) is None


async def test_deployment_breach_is_rolled_back_to_the_previous_version(
        harness: Harness, kube_cluster: KubeCluster) -> None:
    ref, kube = await deployment(kube_cluster)
    ns = str(ref.namespace)
    inp = rollout(ref, 5, bake_time=timedelta(seconds=30), analysis_interval=timedelta(seconds=1))
    handle: Handle = await harness.skipper.client.start_workflow(
        CanaryRolloutWorkflow.run, inp, id=canary_id(inp.name), task_queue=harness.task_queue)
    result = await handle.result()
    assert result.outcome is RolloutPhase.ROLLED_BACK
    assert result.steps_done == 1 and len(result.rolled_back_nodes) == 1
    assert "pods_up" in result.reasons[0]
    stable = live(kube, ns)
    assert stable is not None and image(stable) == f"{IMAGE}:1.4.0" and stable["spec"]["replicas"] == 4
    assert live(kube, ns, ko.WORKLOAD_NAME + ko.CANARY_SUFFIX) is None
    assert ko.ANNOTATION_CANARY_NODES not in (stable["metadata"].get("annotations") or {})
    kinds = [e.kind for e in await harness.resources.audit.latest(10) if e.subject == inp.name]
    assert kinds == ["canary.start", "canary.step", "canary.rollback", "canary.rolled_back"]
