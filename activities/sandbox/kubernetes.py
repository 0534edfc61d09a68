"""The ``kubernetes`` sandbox backend: a sandbox is a namespace on a cluster, chaos is Chaos Mesh.

Every object is written with server-side apply (field manager ``westworld``, forced), so provisioning again is a
no-op and a half-provisioned sandbox is completed. What is created is rendered by ``westworld/kube_objects.py``.
The ``kubernetes`` client is synchronous: every call runs in a thread (``asyncio.to_thread``).

Mesh actions on a ``MeshTarget(backend=kubernetes, namespace, kind, name)``:

- ``set_version`` moving every node (``node_ids`` empty or the whole target) sets the container image tag of the
  workload, records the tag it replaced in ``westworld.io/previous-version`` and in the result; a rollback is a
  ``set_version`` to that tag.
- ``set_version`` moving some nodes of a Deployment is a canary step, as ``CanaryRolloutWorkflow`` sends them (the
  nodes a step moves; ``target.nodes`` are the workload's replica slots): the moved node ids join
  ``westworld.io/canary-nodes``, a second Deployment ``<name>-canary`` (same template, label
  ``westworld.io/track=canary``, new image) runs their share of the replicas and the stable Deployment is scaled
  (scale subresource) to the rest, so the total stays the same. Moving nodes back to the stable version takes them
  off the canary; a canary holding every node is promoted (stable image set, canary deleted), an empty one is
  folded back. A DaemonSet runs one Pod per cluster node and cannot be split: a partial step is refused.
- ``set_config`` sets environment variables of the container (the previous values are kept in an annotation).
- ``restart`` changes a template annotation to the action id, which makes the controller replace the Pods.

Each action kind has its own field manager (``westworld-version``, ``westworld-config``, ...): with server-side
apply a manager's fields missing from its next apply are removed, so each manager always applies its full set.

Errors are mapped in ``activities/sandbox/kube_api.py`` (unreachable: retry; bad input: ``InvalidInput``; refused by
RBAC: ``ConfigError``); faults on a cluster without the Chaos Mesh CRDs are a non-retryable ``ChaosUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from activities.sandbox.kube_api import KubeApi
from activities.sandbox.kube_rollout import Rollout
from westworld import kube_objects as ko
from westworld.errors import CHAOS_UNAVAILABLE, PermanentError, SandboxTerminating
from westworld.sandbox import (
    Backend,
    FaultApplied,
    FaultInput,
    FaultKind,
    MeshActionInput,
    MeshActionResult,
    NodeRef,
    ProvisionInput,
    SandboxRef,
    TeardownResult,
)

Obj = dict[str, Any]
CHAOS_HINT = ("Chaos Mesh is not installed on this cluster (no chaos-mesh.org/v1alpha1 NetworkChaos/PodChaos "
              "resources): install it (https://chaos-mesh.org/docs/production-installation-using-helm/) "
              "to inject faults in kubernetes sandboxes")


class KubernetesSandbox:
    """Sandboxes as namespaces on one cluster (the ``SandboxBackend`` of ``activities/sandbox/backend.py``)."""

    def __init__(self, api: k8s.ApiClient, limits: ko.KubeLimits | None = None, source: str = "") -> None:
        self.kube = KubeApi(api, source)
        self.limits = limits or ko.KubeLimits()

    async def provision(self, inp: ProvisionInput, progress: Callable[[str], None]) -> SandboxRef:
        objects = ko.sandbox_objects(inp, self.limits)
        namespace = objects[0]["metadata"]["name"]
        for obj in objects:
            progress(f"applying {obj['kind']} {obj['metadata']['name']} in {namespace}")
            stored = await asyncio.to_thread(self.kube.apply, obj)
            if obj["kind"] == "Namespace" and stored["metadata"].get("deletionTimestamp"):
                # A teardown of the same sandbox id has not finished: the cluster refuses new objects in it until
                # the namespace is gone, so this attempt fails and the activity retries.
                raise SandboxTerminating(
                    f"namespace {namespace} of sandbox {inp.sandbox_id} is still being deleted (Terminating) by an "
                    "earlier teardown; provisioning is retried until it is gone")
        wl = inp.workload
        nodes = [NodeRef(id=f"{inp.sandbox_id}-{i}", address=f"{namespace}/{wl.kind.lower()}/{ko.WORKLOAD_NAME}",
                         version=wl.version) for i in range(wl.nodes)]
        return SandboxRef(
            backend=Backend.KUBERNETES, sandbox_id=inp.sandbox_id, arm=inp.arm, nodes=nodes, namespace=namespace,
            labels={"sandbox": inp.sandbox_id, "arm": inp.arm.value, "namespace": namespace},
            chaos_mode="chaos-mesh: NetworkChaos/PodChaos resources in the sandbox namespace")

    def _chaos(self, inp: FaultInput) -> tuple[Obj, str]:
        namespace = inp.sandbox.namespace or ko.namespace_name(inp.sandbox.sandbox_id)
        obj = ko.chaos_object(namespace, inp.sandbox.sandbox_id, inp.fault, inp.fault_id)
        return obj, namespace

    async def apply_fault(self, inp: FaultInput) -> FaultApplied:
        obj, _ = self._chaos(inp)
        served = await asyncio.to_thread(self.kube.chaos_kinds)
        if obj["kind"] not in served:
            raise PermanentError(f"cannot apply {inp.fault.kind.value} fault {inp.fault_id}: {CHAOS_HINT}",
                                 type=CHAOS_UNAVAILABLE)
        await asyncio.to_thread(self.kube.apply, obj)
        return FaultApplied(fault_id=inp.fault_id, nodes=self._fault_nodes(inp), mode="chaos-mesh",
                            note=f"{obj['kind']} {obj['metadata']['name']} ({obj['spec']['mode']} pods)")

    async def clear_fault(self, inp: FaultInput) -> FaultApplied:
        obj, namespace = self._chaos(inp)
        served = await asyncio.to_thread(self.kube.chaos_kinds)
        if obj["kind"] not in served:  # nothing can have been applied
            note = "Chaos Mesh is not installed: nothing to clear"
        else:
            gone = await asyncio.to_thread(self.kube.delete, obj["kind"], obj["metadata"]["name"], namespace)
            note = f"{obj['kind']} {obj['metadata']['name']} " + ("deleted" if gone else "was not present")
        if inp.fault.kind is FaultKind.NODE_KILL:
            note += "; killed Pods are recreated by their controller"
        return FaultApplied(fault_id=inp.fault_id, nodes=self._fault_nodes(inp), mode="chaos-mesh", note=note)

    @staticmethod
    def _fault_nodes(inp: FaultInput) -> list[str]:
        ids = [n.id for n in inp.sandbox.nodes]
        return [ids[i] for i in inp.fault.nodes if i < len(ids)] if inp.fault.nodes else ids

    async def teardown(self, ref: SandboxRef) -> TeardownResult:
        namespace = ref.namespace or ko.namespace_name(ref.sandbox_id)
        return TeardownResult(sandbox_id=ref.sandbox_id,
                              removed=await asyncio.to_thread(self._teardown, namespace))

    def _teardown(self, namespace: str) -> list[str]:
        # No controller may be running to empty a Terminating namespace (as on the test apiserver), so the
        # objects are deleted one by one first; the namespace is removed last.
        removed: list[str] = []
        ns = self.kube.get("Namespace", namespace)
        if ns is None:
            return removed
        kinds = [*sorted(self.kube.chaos_kinds()), "Deployment", "DaemonSet", "NetworkPolicy", "ResourceQuota"]
        for kind in kinds:
            for name in self.kube.list_names(kind, namespace):
                if self.kube.delete(kind, name, namespace):
                    removed.append(f"{kind}/{name}")
        if not ns["metadata"].get("deletionTimestamp") and self.kube.delete("Namespace", namespace):
            removed.append(f"Namespace/{namespace}")
        return removed

    async def execute_mesh_action(self, inp: MeshActionInput) -> MeshActionResult:
        return await asyncio.to_thread(self._mesh_action, inp)

    def _mesh_action(self, inp: MeshActionInput) -> MeshActionResult:
        return Rollout(self.kube, inp).run()

