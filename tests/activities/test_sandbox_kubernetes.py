"""The kubernetes sandbox backend against a real kube-apiserver and etcd (tests/fixtures/kube.py).

What this checks: the objects the backend creates, patches, rolls back and removes, as the apiserver stores and
validates them; idempotency (a repeated call leaves resourceVersions unchanged); errors; the RBAC the worker needs.
What it cannot check here: there is no kubelet, scheduler or controller-manager, so no Pod ever runs, NetworkPolicies
and Chaos Mesh resources are stored but never enforced, and a deleted namespace stays Terminating. The Chaos Mesh
CRDs installed here are the minimal stand-ins of deploy/kube/chaos-mesh-crds.yaml (no Chaos Mesh controller).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sandbox.backend import SandboxActivities
from activities.sandbox.kube_api import KubeApi, client_from_kubeconfig
from activities.sandbox.kubernetes import KubernetesSandbox
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.kube import WORKER_USER, KubeCluster
from westworld import kube_objects as ko
from westworld.errors import (
    CHAOS_UNAVAILABLE,
    CONFIG_ERROR,
    INVALID_INPUT,
    KUBE_UNREACHABLE,
    KubeUnreachable,
    SandboxTerminating,
    WestworldError,
)
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

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kube"
IMAGE = "registry.example/westworld/mesh-node"
T = TypeVar("T")
SANDBOX_KINDS = ("NetworkPolicy", "ResourceQuota", "Deployment", "DaemonSet")


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> KubeApi:
    return KubeApi(kube_cluster.api_client())


@pytest.fixture
def backend(kube_cluster: KubeCluster) -> KubernetesSandbox:
    """Built the way the worker builds it: from a kubeconfig file (TLS verified against the test CA)."""
    return KubernetesSandbox(client_from_kubeconfig(kube_cluster.kubeconfig))


def provision_input(nodes: int = 3, kind: str = "Deployment", config: dict[str, str] | None = None,
                    egress: list[str] | None = None, sandbox_id: str | None = None) -> ProvisionInput:
    return ProvisionInput(
        backend=Backend.KUBERNETES, sandbox_id=sandbox_id or f"t{uuid.uuid4().hex[:10]}", arm=Arm.TREATMENT,
        workload=Workload(version="1.4.0", nodes=nodes, image=IMAGE, kind=kind, config=config or {"MESH_MTU": "1400"}),
        egress_allow=egress or [])


def versions(kube: KubeApi, namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of every object of the sandbox (and the namespace itself)."""
    ns = kube.get("Namespace", namespace)
    assert ns is not None
    found = {f"Namespace/{namespace}": ns["metadata"]["resourceVersion"]}
    for kind in SANDBOX_KINDS:
        for name in kube.list_names(kind, namespace):
            obj = kube.get(kind, name, namespace)
            assert obj is not None
            found[f"{kind}/{name}"] = obj["metadata"]["resourceVersion"]
    return found


def workload(kube: KubeApi, namespace: str, name: str = ko.WORKLOAD_NAME, kind: str = "Deployment") -> dict[str, Any]:
    obj = kube.get(kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} is missing"
    return obj


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_provision_creates_isolated_namespace_policies_quota_and_deployment(
        backend: KubernetesSandbox, kube: KubeApi) -> None:
    inp = provision_input(nodes=3, egress=["10.20.0.0/16", "192.0.2.7:443"], config={"MESH_MTU": "1400"})
    steps: list[str] = []
    ref = await backend.provision(inp, steps.append)
    ns = f"ww-{inp.sandbox_id}"

    assert ref.namespace == ns and ref.backend is Backend.KUBERNETES and len(ref.nodes) == 3
    assert ref.labels == {"sandbox": inp.sandbox_id, "arm": "treatment", "namespace": ns}
    assert any("Deployment mesh-node" in s for s in steps)
    namespace = kube.get("Namespace", ns)
    assert namespace is not None
    expected = {"westworld.io/sandbox": inp.sandbox_id, "westworld.io/arm": "treatment",
                "westworld.io/isolated": "true"}
    assert namespace["metadata"]["labels"].items() >= expected.items()
    deny = kube.get("NetworkPolicy", "default-deny", ns)
    assert deny is not None
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = kube.get("NetworkPolicy", "westworld-allow", ns)
    assert allow is not None
    egress = allow["spec"]["egress"]
    assert {"to": [{"podSelector": {}}]} in egress
    assert {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]} in egress
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]} in egress
    assert {"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"protocol": "TCP", "port": 443}]} in egress
    assert len(egress) == 4, "nothing but intra-namespace, DNS and the allow-list may leave the sandbox"
    assert allow["spec"]["ingress"][0] == {"from": [{"podSelector": {}}]}
    quota = kube.get("ResourceQuota", "westworld-quota", ns)
    assert quota is not None
    assert quota["spec"]["hard"]["pods"] == "8" and quota["spec"]["hard"]["requests.cpu"] == "800m"
    deployment = workload(kube, ns)
    assert deployment["spec"]["replicas"] == 3
    assert image_of(deployment) == f"{IMAGE}:1.4.0"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MESH_MTU", "value": "1400"}]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert kube.get("DaemonSet", ko.WORKLOAD_NAME, ns) is None


async def test_provision_again_changes_nothing(backend: KubernetesSandbox, kube: KubeApi) -> None:
    inp = provision_input()
    first = await backend.provision(inp, lambda _: None)
    before = versions(kube, f"ww-{inp.sandbox_id}")
    # Into the next second: server-side apply stamps managedFields with a time in seconds, so a re-apply that the
    # server sees as a change (a non-canonical quantity such as "4000m") would show up as a new resourceVersion.
    await asyncio.sleep(1.1)
    again = await backend.provision(inp, lambda _: None)
    assert again == first
    assert versions(kube, f"ww-{inp.sandbox_id}") == before
    assert len(before) == 5  # namespace, two policies, quota, deployment


async def test_daemonset_workload(backend: KubernetesSandbox, kube: KubeApi) -> None:
    inp = provision_input(kind="DaemonSet")
    await backend.provision(inp, lambda _: None)
    ns = f"ww-{inp.sandbox_id}"
    daemonset = workload(kube, ns, kind="DaemonSet")
    assert image_of(daemonset) == f"{IMAGE}:1.4.0"
    assert "replicas" not in daemonset["spec"]
    assert kube.get("Deployment", ko.WORKLOAD_NAME, ns) is None


def fault_input(ref: SandboxRef, kind: FaultKind, **fields: Any) -> FaultInput:
    fault = Fault(kind=kind, duration=timedelta(seconds=45), **fields)
    return FaultInput(sandbox=ref, fault=fault, fault_id=f"exp-1:{kind.value}:{uuid.uuid4().hex[:6]}")


async def test_faults_without_chaos_mesh_are_a_clear_permanent_error(
        backend: KubernetesSandbox, kube: KubeApi, no_chaos_crds: None) -> None:
    ref = await backend.provision(provision_input(), lambda _: None)
    fault = fault_input(ref, FaultKind.LATENCY, latency_ms=100)
    with pytest.raises(WestworldError, match="Chaos Mesh is not installed") as raised:
        await backend.apply_fault(fault)
    assert raised.value.type == CHAOS_UNAVAILABLE
    activities = SandboxActivities({Backend.KUBERNETES: backend})
    with pytest.raises(ApplicationError) as app_error:
        await InterceptedEnvironment().run(activities.apply_fault, fault)
    assert app_error.value.type == CHAOS_UNAVAILABLE and app_error.value.non_retryable
    cleared = await backend.clear_fault(fault)
    assert "nothing to clear" in cleared.note


@pytest.fixture
def no_chaos_crds(kube: KubeApi) -> None:
    remove_crds(kube)


def crd_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "chaos-mesh-crds.yaml").read_text()) if doc]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.2)


def remove_crds(kube: KubeApi) -> None:
    for doc in crd_documents():
        kube.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                     "delete CRD", missing_ok=True)
    wait_for(lambda: not kube.chaos_kinds(), "Chaos Mesh CRDs removed")


@pytest.fixture
def chaos_crds(kube: KubeApi) -> Iterator[None]:
    """The minimal Chaos Mesh CRDs installed for one test (cluster-wide), removed after it."""
    for doc in crd_documents():
        kube.request("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                     "install CRD", body=doc, query=[("fieldManager", "test"), ("force", "true")],
                     content_type="application/apply-patch+yaml")
    wait_for(lambda: kube.chaos_kinds() == {"NetworkChaos", "PodChaos"}, "Chaos Mesh CRDs served")
    yield
    remove_crds(kube)


async def test_faults_create_chaos_mesh_resources_and_clear_removes_them(
        backend: KubernetesSandbox, kube: KubeApi, chaos_crds: None) -> None:
    ref = await backend.provision(provision_input(nodes=4), lambda _: None)
    ns = ref.namespace
    latency = fault_input(ref, FaultKind.LATENCY, latency_ms=120, jitter_ms=15, nodes=[0, 2])
    loss = fault_input(ref, FaultKind.PACKET_LOSS, loss_pct=12.5)
    partition = fault_input(ref, FaultKind.PARTITION, nodes=[1])
    kill = fault_input(ref, FaultKind.NODE_KILL, nodes=[3])
    applied = {f.fault.kind: await backend.apply_fault(f) for f in (latency, loss, partition, kill)}
    assert applied[FaultKind.LATENCY].nodes == [ref.nodes[0].id, ref.nodes[2].id]
    assert applied[FaultKind.LATENCY].mode == "chaos-mesh"

    def chaos(kind: str, f: FaultInput) -> dict[str, Any]:
        obj = kube.get(kind, ko.object_name(f.fault_id, "ww"), ns)
        assert obj is not None, f"{kind} for {f.fault_id} missing"
        assert obj["metadata"]["annotations"][ko.ANNOTATION_FAULT] == f.fault_id
        return obj["spec"]  # type: ignore[no-any-return]

    selector = {"namespaces": [ns], "labelSelectors": {ko.LABEL_APP: ko.WORKLOAD_NAME}}
    assert chaos("NetworkChaos", latency) == {
        "action": "delay", "mode": "fixed", "value": "2", "selector": selector, "duration": "45s",
        "delay": {"latency": "120ms", "jitter": "15ms", "correlation": "0"}}
    assert chaos("NetworkChaos", loss) == {"action": "loss", "mode": "all", "selector": selector, "duration": "45s",
                                           "loss": {"loss": "12.5", "correlation": "0"}}
    part = chaos("NetworkChaos", partition)
    assert part["action"] == "partition" and part["direction"] == "both" and part["value"] == "1"
    assert part["target"] == {"mode": "all", "selector": selector}
    assert chaos("PodChaos", kill) == {"action": "pod-kill", "mode": "fixed", "value": "1", "selector": selector}

    version = kube.get("NetworkChaos", ko.object_name(latency.fault_id, "ww"), ns)
    await backend.apply_fault(latency)  # a retried activity changes nothing
    assert kube.get("NetworkChaos", ko.object_name(latency.fault_id, "ww"), ns) == version

    for f, kind in ((latency, "NetworkChaos"), (kill, "PodChaos")):
        cleared = await backend.clear_fault(f)
        assert "deleted" in cleared.note
        assert kube.get(kind, ko.object_name(f.fault_id, "ww"), ns) is None
    assert "was not present" in (await backend.clear_fault(latency)).note

    result = await backend.teardown(ref)  # the faults still applied go with the sandbox
    assert {f"NetworkChaos/{ko.object_name(f.fault_id, 'ww')}" for f in (loss, partition)} <= set(result.removed)
    assert kube.list_names("NetworkChaos", str(ns)) == []


def action(ref: SandboxRef, act: MeshAction, count: int | None = None, version: str | None = None,
           config: dict[str, str] | None = None, name: str = ko.WORKLOAD_NAME, kind: str = "Deployment",
           namespace: str | None = None) -> MeshActionInput:
    ids = [n.id for n in ref.nodes][: count if count is not None else len(ref.nodes)]
    target = MeshTarget(backend=Backend.KUBERNETES, namespace=namespace or ref.namespace, kind=kind, name=name,
                        nodes=ref.nodes)
    return MeshActionInput(target=target, action=act, node_ids=ids, version=version, config=config or {},
                           action_id=f"rollout-1:{act.value}:{uuid.uuid4().hex[:6]}")


def replicas(kube: KubeApi, ns: str, name: str) -> int:
    scale = kube.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", "read scale")
    assert scale is not None
    return int(scale["spec"]["replicas"])


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
async def test_set_version_records_previous_and_rollback_restores_it(
        backend: KubernetesSandbox, kube: KubeApi, kind: str) -> None:
    ref = await backend.provision(provision_input(nodes=3, kind=kind), lambda _: None)
    ns = str(ref.namespace)
    upgrade = action(ref, MeshAction.SET_VERSION, version="1.5.0", kind=kind)
    result = await backend.execute_mesh_action(upgrade)
    assert result.applied == [n.id for n in ref.nodes]
    assert result.previous == {n.id: "1.4.0" for n in ref.nodes}
    live = workload(kube, ns, kind=kind)
    assert image_of(live) == f"{IMAGE}:1.5.0"
    assert live["metadata"]["annotations"][ko.ANNOTATION_PREVIOUS] == "1.4.0"
    assert live["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "MESH_MTU", "value": "1400"}]
    if kind == "Deployment":
        assert live["spec"]["replicas"] == 3

    again = await backend.execute_mesh_action(upgrade)  # a retried activity: same answer, nothing written
    assert again.previous == result.previous
    assert workload(kube, ns, kind=kind)["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]

    rollback = await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, version="1.4.0", kind=kind))
    assert rollback.previous == {n.id: "1.5.0" for n in ref.nodes}
    restored = workload(kube, ns, kind=kind)
    assert image_of(restored) == f"{IMAGE}:1.4.0"
    assert restored["metadata"]["annotations"][ko.ANNOTATION_PREVIOUS] == "1.5.0"


async def test_canary_step_splits_replicas_then_rollback_and_promotion_fold_it_back(
        backend: KubernetesSandbox, kube: KubeApi) -> None:
    ref = await backend.provision(provision_input(nodes=4), lambda _: None)
    ns, canary = str(ref.namespace), ko.WORKLOAD_NAME + ko.CANARY_SUFFIX

    step = await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, count=1, version="1.5.0"))
    assert step.applied == [ref.nodes[0].id] and step.previous == {ref.nodes[0].id: "1.4.0"}
    canary_obj = workload(kube, ns, canary)
    assert canary_obj["spec"]["replicas"] == 1 and image_of(canary_obj) == f"{IMAGE}:1.5.0"
    assert canary_obj["spec"]["selector"]["matchLabels"][ko.LABEL_TRACK] == "canary"
    assert canary_obj["spec"]["template"]["metadata"]["labels"][ko.LABEL_TRACK] == "canary"
    stable = workload(kube, ns)
    assert image_of(stable) == f"{IMAGE}:1.4.0" and replicas(kube, ns, ko.WORKLOAD_NAME) == 3
    assert stable["metadata"]["annotations"][ko.ANNOTATION_REPLICAS] == "4"

    await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, count=2, version="1.5.0"))
    assert workload(kube, ns, canary)["spec"]["replicas"] == 2 and replicas(kube, ns, ko.WORKLOAD_NAME) == 2

    await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, version="1.4.0"))  # rollback
    assert kube.get("Deployment", canary, ns) is None
    stable = workload(kube, ns)
    assert image_of(stable) == f"{IMAGE}:1.4.0" and replicas(kube, ns, ko.WORKLOAD_NAME) == 4
    assert ko.ANNOTATION_REPLICAS not in stable["metadata"]["annotations"]

    await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, count=1, version="1.5.0"))
    promoted = await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, version="1.5.0"))
    assert promoted.previous == {n.id: "1.4.0" for n in ref.nodes}
    assert kube.get("Deployment", canary, ns) is None
    assert image_of(workload(kube, ns)) == f"{IMAGE}:1.5.0" and replicas(kube, ns, ko.WORKLOAD_NAME) == 4


def moving(ref: SandboxRef, indexes: list[int], version: str, step: str) -> MeshActionInput:
    """What CanaryRolloutWorkflow sends: the nodes a step moves (not the cumulative set), the whole target."""
    inp = action(ref, MeshAction.SET_VERSION, version=version)
    return inp.model_copy(update={"node_ids": [ref.nodes[i].id for i in indexes], "action_id": f"canary:x:{step}"})


async def test_canary_steps_as_the_rollout_workflow_sends_them(backend: KubernetesSandbox, kube: KubeApi) -> None:
    ref = await backend.provision(provision_input(nodes=4), lambda _: None)
    ns, canary = str(ref.namespace), ko.WORKLOAD_NAME + ko.CANARY_SUFFIX
    first = await backend.execute_mesh_action(moving(ref, [2], "1.5.0", "step-0"))
    assert first.previous == {ref.nodes[2].id: "1.4.0"}
    second = await backend.execute_mesh_action(moving(ref, [0, 3], "1.5.0", "step-1"))
    assert second.previous == {ref.nodes[0].id: "1.4.0", ref.nodes[3].id: "1.4.0"}
    assert workload(kube, ns, canary)["spec"]["replicas"] == 3 and replicas(kube, ns, ko.WORKLOAD_NAME) == 1
    stable = workload(kube, ns)
    assert yaml.safe_load(stable["metadata"]["annotations"][ko.ANNOTATION_CANARY_NODES]) == sorted(
        ref.nodes[i].id for i in (0, 2, 3))
    again = await backend.execute_mesh_action(moving(ref, [0, 3], "1.5.0", "step-1"))  # a retried step
    assert again.previous == second.previous
    assert workload(kube, ns)["metadata"]["resourceVersion"] == stable["metadata"]["resourceVersion"]

    # The workflow's automatic rollback: every moved node back to its previous version.
    back = await backend.execute_mesh_action(moving(ref, [0, 2, 3], "1.4.0", "rollback-1.4.0"))
    assert back.previous == {ref.nodes[i].id: "1.5.0" for i in (0, 2, 3)}
    assert kube.get("Deployment", canary, ns) is None
    stable = workload(kube, ns)
    assert image_of(stable) == f"{IMAGE}:1.4.0" and replicas(kube, ns, ko.WORKLOAD_NAME) == 4
    assert ko.ANNOTATION_CANARY_NODES not in stable["metadata"]["annotations"]

    # A rollout that reaches every node is a promotion of the stable workload.
    await backend.execute_mesh_action(moving(ref, [1, 2], "1.5.0", "step-0b"))
    await backend.execute_mesh_action(moving(ref, [0, 3], "1.5.0", "step-1b"))
    assert kube.get("Deployment", canary, ns) is None
    promoted = workload(kube, ns)
    assert image_of(promoted) == f"{IMAGE}:1.5.0" and replicas(kube, ns, ko.WORKLOAD_NAME) == 4
    assert promoted["metadata"]["annotations"][ko.ANNOTATION_PREVIOUS] == "1.4.0"


async def test_a_daemonset_cannot_be_split_into_a_canary(backend: KubernetesSandbox, kube: KubeApi) -> None:
    ref = await backend.provision(provision_input(kind="DaemonSet"), lambda _: None)
    with pytest.raises(WestworldError, match="cannot be split into a canary") as err:
        await backend.execute_mesh_action(moving(ref, [0], "1.5.0", "step-0").model_copy(
            update={"target": MeshTarget(backend=Backend.KUBERNETES, namespace=ref.namespace, kind="DaemonSet",
                                         name=ko.WORKLOAD_NAME, nodes=ref.nodes)}))
    assert err.value.type == INVALID_INPUT
    assert image_of(workload(kube, str(ref.namespace), kind="DaemonSet")) == f"{IMAGE}:1.4.0"


async def test_set_config_and_restart_patch_the_template(backend: KubernetesSandbox, kube: KubeApi) -> None:
    ref = await backend.provision(provision_input(config={"MESH_MTU": "1400", "HELLO_MS": "500"}), lambda _: None)
    ns = str(ref.namespace)
    await backend.execute_mesh_action(action(ref, MeshAction.SET_CONFIG, config={"HELLO_MS": "250", "NEW": "x"}))
    live = workload(kube, ns)
    env = {e["name"]: e["value"] for e in live["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"MESH_MTU": "1400", "HELLO_MS": "250", "NEW": "x"}
    assert yaml.safe_load(live["metadata"]["annotations"][ko.ANNOTATION_PREVIOUS_CONFIG]) == {"HELLO_MS": "500",
                                                                                               "NEW": ""}
    assert image_of(live) == f"{IMAGE}:1.4.0"
    restart = action(ref, MeshAction.RESTART)
    await backend.execute_mesh_action(restart)
    annotations = workload(kube, ns)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ko.ANNOTATION_RESTART] == restart.action_id
    assert annotations["prometheus.io/scrape"] == "true"


async def test_teardown_removes_everything_and_is_repeatable(backend: KubernetesSandbox, kube: KubeApi) -> None:
    ref = await backend.provision(provision_input(), lambda _: None)
    ns = str(ref.namespace)
    await backend.execute_mesh_action(action(ref, MeshAction.SET_VERSION, count=1, version="1.5.0"))
    result = await backend.teardown(ref)
    assert set(result.removed) == {
        "Deployment/mesh-node", "Deployment/mesh-node-canary", "NetworkPolicy/default-deny",
        "NetworkPolicy/westworld-allow", "ResourceQuota/westworld-quota", f"Namespace/{ns}"}
    for kind in SANDBOX_KINDS:
        assert kube.list_names(kind, ns) == [], f"{kind} left in {ns}"
    namespace = kube.get("Namespace", ns)
    # Without a controller-manager the namespace stays Terminating here; on a cluster it disappears.
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    assert (await backend.teardown(ref)).removed == []

    if namespace is not None:  # Terminating here: a new provision of the same id must wait, not half-succeed
        with pytest.raises(SandboxTerminating, match=f"namespace {ns} .* still being deleted"):
            await backend.provision(provision_input(sandbox_id=ref.sandbox_id), lambda _: None)


async def test_bad_input_is_refused_naming_what_is_wrong(backend: KubernetesSandbox, kube: KubeApi) -> None:
    activities = SandboxActivities({Backend.KUBERNETES: backend})
    env = InterceptedEnvironment()
    bad_id = provision_input(sandbox_id="Bad_Id")
    with pytest.raises(ApplicationError, match="sandbox_id 'Bad_Id' cannot name a Kubernetes namespace") as err:
        await env.run(activities.provision_sandbox, bad_id)
    assert err.value.type == INVALID_INPUT and err.value.non_retryable
    assert kube.get("Namespace", "ww-Bad_Id") is None

    with pytest.raises(WestworldError, match=r"egress_allow entry 'example\.org:443'"):
        await backend.provision(provision_input(egress=["example.org:443"]), lambda _: None)
    with pytest.raises(WestworldError, match=r"workload\.kind 'StatefulSet'"):
        await backend.provision(provision_input(kind="StatefulSet"), lambda _: None)

    # Refused by the apiserver itself (422): the error names the object; what was created stays, and the
    # corrected input completes the same sandbox.
    inp = provision_input(config={"BAD KEY": "1"})
    with pytest.raises(ApplicationError, match=f"apply Deployment ww-{inp.sandbox_id}/mesh-node") as err:
        await env.run(activities.provision_sandbox, inp)
    assert err.value.type == INVALID_INPUT and err.value.non_retryable and "BAD KEY" in str(err.value)
    assert kube.get("ResourceQuota", "westworld-quota", f"ww-{inp.sandbox_id}") is not None
    fixed = inp.model_copy(update={"workload": inp.workload.model_copy(update={"config": {"GOOD_KEY": "1"}})})
    ref = await env.run(activities.provision_sandbox, fixed)
    assert workload(kube, str(ref.namespace))["spec"]["replicas"] == 3

    with pytest.raises(ApplicationError, match=r"Deployment .*/nope does not exist") as err:
        await env.run(activities.execute_mesh_action, action(ref, MeshAction.SET_VERSION, version="2", name="nope"))
    assert err.value.type == INVALID_INPUT
    with pytest.raises(ApplicationError, match="version 'v 2!' is not a valid image tag"):
        await env.run(activities.execute_mesh_action, action(ref, MeshAction.SET_VERSION, version="v 2!"))


async def test_unreachable_apiserver_is_retryable_and_says_where(kube_cluster: KubeCluster) -> None:
    from workers.stack.processes import free_port

    port = free_port()
    config = kube_cluster.base / "unreachable.kubeconfig"
    config.write_text(kube_cluster.kubeconfig.read_text().replace(kube_cluster.host, f"https://127.0.0.1:{port}"))
    backend = KubernetesSandbox(client_from_kubeconfig(config))
    with pytest.raises(KubeUnreachable, match=f"kube-apiserver at https://127.0.0.1:{port} is unreachable"):
        await backend.provision(provision_input(), lambda _: None)
    with pytest.raises(ApplicationError) as err:  # through the activity: typed, and left to retry
        await InterceptedEnvironment().run(SandboxActivities({Backend.KUBERNETES: backend}).provision_sandbox,
                                           provision_input())
    assert err.value.type == KUBE_UNREACHABLE and not err.value.non_retryable


async def granted(call: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """``call()`` once a new RoleBinding has reached the apiserver's RBAC cache (it is eventually consistent)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except WestworldError as err:
            if err.type != CONFIG_ERROR or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_worker_rbac_manifest_grants_what_the_backend_needs(kube_cluster: KubeCluster, kube: KubeApi) -> None:
    worker = KubernetesSandbox(client_from_kubeconfig(kube_cluster.kubeconfig_for(kube_cluster.worker_token,
                                                                                  WORKER_USER)))
    role = next(d for d in yaml.safe_load_all((DEPLOY / "worker-rbac.yaml").read_text())
                if d and d["kind"] == "ClusterRole")
    binding_path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/westworld-sandbox-test"
    kube.request("DELETE", binding_path, "unbind", missing_ok=True)
    inp = provision_input()
    with pytest.raises(WestworldError, match=r"deploy/kube/worker-rbac\.yaml") as err:
        await worker.provision(inp, lambda _: None)
    assert err.value.type == CONFIG_ERROR

    kube.request("PATCH", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}", "role",
                 body=role, query=[("fieldManager", "test"), ("force", "true")],
                 content_type="application/apply-patch+yaml")
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "westworld-sandbox-test"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": role["metadata"]["name"]},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": WORKER_USER}]}
    kube.request("PATCH", binding_path, "bind", body=binding, query=[("fieldManager", "test"), ("force", "true")],
                 content_type="application/apply-patch+yaml")
    try:
        ref = await granted(lambda: worker.provision(inp, lambda _: None))
        await worker.execute_mesh_action(action(ref, MeshAction.SET_VERSION, count=1, version="1.5.0"))
        await worker.execute_mesh_action(action(ref, MeshAction.SET_VERSION, version="1.4.0"))
        removed = await worker.teardown(ref)
        assert f"Namespace/{ref.namespace}" in removed.removed
    finally:
        kube.request("DELETE", binding_path, "unbind", missing_ok=True)


async def test_worker_wiring_adds_the_backend_only_when_kube_config_is_set(
        kube_cluster: KubeCluster, tmp_path: Path) -> None:
    import httpx

    from workers.settings import Settings
    from workers.wiring.experiments import sandbox_backends

    async with httpx.AsyncClient() as http:
        assert Backend.KUBERNETES not in sandbox_backends(Settings(data_dir=tmp_path, kube_config=""), http)
        configured = sandbox_backends(Settings(data_dir=tmp_path, kube_config=str(kube_cluster.kubeconfig)), http)
        ref = await ActivityEnvironment().run(SandboxActivities(configured).provision_sandbox, provision_input())
        assert ref.namespace and ref.backend is Backend.KUBERNETES
        with pytest.raises(WestworldError, match="no such file; set WESTWORLD_KUBE_CONFIG") as err:
            sandbox_backends(Settings(data_dir=tmp_path, kube_config=str(tmp_path / "missing")), http)
        assert err.value.type == CONFIG_ERROR
