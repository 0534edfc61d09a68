"""AgentActionWorkflow executing on a Kubernetes Deployment: a real Temporal server and worker (its kubernetes
backend configured by ``kube_config``) against a real kube-apiserver and etcd (no kubelet: the Deployment object
is what changes; see tests/fixtures/kube.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from activities.sandbox.kube_api import client_from_kubeconfig
from activities.sandbox.kubernetes import KubernetesSandbox
from tests.fixtures.kube import KubeCluster
from tests.workflows.capabilities_support import network, start_action
from tests.workflows.conftest import Harness
from westworld import capability as cap
from westworld import kube_objects as ko
from westworld.agents import AgentActionInput
from westworld.sandbox import Arm, Backend, MeshAction, MeshTarget, ProvisionInput, Workload


@pytest.fixture
def settings_overrides(kube_cluster: KubeCluster, tmp_path: Path) -> dict[str, Any]:
    return {"sandbox_namespaces": False, "kube_config": str(kube_cluster.kubeconfig)}


def image_of(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_an_allowed_action_sets_the_deployment_version_and_a_denied_one_does_not(
        harness: Harness, kube_cluster: KubeCluster) -> None:
    backend = KubernetesSandbox(client_from_kubeconfig(kube_cluster.kubeconfig))
    ref = await backend.provision(ProvisionInput(
        backend=Backend.KUBERNETES, sandbox_id=f"agent-{uuid.uuid4().hex[:6]}", arm=Arm.BASELINE,
        workload=Workload(version="1.4.0", nodes=4, image="registry.example/westworld/mesh-node")), lambda _: None)
    assert ref.namespace is not None
    net = await network(harness, 500)  # 4 nodes of 504 stay under the network policy's 1%: not wide
    for node in ref.nodes:
        await net.store.add_node(node.id, "k8s", None, datetime.now(UTC))
    target = MeshTarget(backend=Backend.KUBERNETES, namespace=ref.namespace, kind="Deployment",
                        name=ko.WORKLOAD_NAME, nodes=ref.nodes)
    ids = [n.id for n in ref.nodes]
    narrow = cap.attenuate(await net.store.mint("k8s-agent", ["set_version"]), ["affects_nodes_le = 2"])
    denied = await (await start_action(harness, AgentActionInput(
        agent_id="k8s-agent", action_id="too-wide", token=narrow, action=MeshAction.SET_VERSION, node_ids=ids,
        version="1.5.0", target=target))).result()
    assert (denied.allowed, denied.executed, denied.caveat) == (False, False, "affects_nodes_le = 2")
    assert image_of(backend.kube.get("Deployment", ko.WORKLOAD_NAME, ref.namespace)).endswith(":1.4.0")

    token = cap.attenuate(await net.store.mint("k8s-agent", ["set_version"]), ["regions = k8s"])
    done = await (await start_action(harness, AgentActionInput(
        agent_id="k8s-agent", action_id="whole", token=token, action=MeshAction.SET_VERSION, node_ids=ids,
        version="1.5.0", target=target))).result()
    assert done.allowed and done.executed and sorted(done.applied) == sorted(ids)
    assert done.previous == dict.fromkeys(ids, "1.4.0")
    assert image_of(backend.kube.get("Deployment", ko.WORKLOAD_NAME, ref.namespace)).endswith(":1.5.0")
