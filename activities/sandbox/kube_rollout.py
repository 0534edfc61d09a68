"""Mesh actions on a Kubernetes Deployment or DaemonSet: set a version (whole or canary), set config, restart.

See ``activities/sandbox/kubernetes.py`` for the behaviour. Runs synchronously (the caller uses a thread).
Every write is a server-side apply whose field manager is the action kind's own, so repeating an action changes
nothing and one kind of action never drops the fields another one set.
"""

from __future__ import annotations

import json
import re
from typing import Any

from activities.sandbox.kube_api import KubeApi
from westworld import kube_objects as ko
from westworld.errors import InvalidInput
from westworld.sandbox import Backend, MeshAction, MeshActionInput, MeshActionResult

Obj = dict[str, Any]
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MANAGER_VERSION = "westworld-version"
MANAGER_CANARY = "westworld-canary"
MANAGER_CONFIG = "westworld-config"
MANAGER_RESTART = "westworld-restart"


def require_target(inp: MeshActionInput) -> tuple[str, str, str]:
    """(namespace, kind, name) of a valid kubernetes target; anything else is refused naming the field."""
    t = inp.target
    if t.backend is not Backend.KUBERNETES or not t.namespace or not t.name:
        raise InvalidInput(f"mesh action {inp.action_id}: a kubernetes target needs backend=kubernetes, namespace "
                           f"and name (got backend={t.backend.value}, namespace={t.namespace!r}, name={t.name!r})")
    if t.kind not in ko.WORKLOAD_KINDS:
        raise InvalidInput(f"mesh action {inp.action_id}: target.kind {t.kind!r} is not one of "
                           f"{', '.join(ko.WORKLOAD_KINDS)}")
    if inp.action is MeshAction.SET_VERSION and not _TAG.match(inp.version or ""):
        raise InvalidInput(f"mesh action {inp.action_id}: version {inp.version!r} is not a valid image tag "
                           "(letters, digits, '_', '.', '-'; at most 128 characters)")
    return t.namespace, t.kind, t.name


class Rollout:
    """One mesh action on one workload."""

    def __init__(self, kube: KubeApi, inp: MeshActionInput) -> None:
        self.kube, self.inp = kube, inp
        self.namespace, self.kind, self.name = require_target(inp)

    def run(self) -> MeshActionResult:
        live = self.kube.get(self.kind, self.name, self.namespace)
        if live is None:
            raise InvalidInput(f"mesh action {self.inp.action_id}: {self.kind} {self.namespace}/{self.name} "
                               "does not exist")
        container = self._container(live)
        current = ko.image_tag(container["image"])
        keys = self.inp.node_ids or [self.name]
        if self.inp.action is MeshAction.SET_VERSION:
            previous = self._set_version(live, container, current)
        elif self.inp.action is MeshAction.SET_CONFIG:
            self._set_config(live, container)
            previous = dict.fromkeys(keys, current)
        else:
            self._apply(MANAGER_RESTART, {"spec": {"template": {"metadata": {"annotations": {
                ko.ANNOTATION_RESTART: self.inp.action_id}}}}})
            previous = dict.fromkeys(keys, current)
        return MeshActionResult(action_id=self.inp.action_id, applied=list(keys), previous=previous)

    def _container(self, live: Obj) -> Obj:
        containers: list[Obj] = live["spec"]["template"]["spec"]["containers"]
        return next((c for c in containers if c["name"] == ko.CONTAINER_NAME), containers[0])

    def _apply(self, manager: str, patch: Obj, name: str | None = None) -> Obj:
        obj = {"apiVersion": "apps/v1", "kind": self.kind,
               "metadata": {"name": name or self.name, "namespace": self.namespace}} | {
                   k: v for k, v in patch.items() if k != "metadata"}
        obj["metadata"] |= patch.get("metadata", {})
        return self.kube.apply(obj, manager)

    def _set_version(self, live: Obj, container: Obj, current: str) -> dict[str, str]:
        """Move ``node_ids`` (all nodes when empty) to ``version``; returns each node's version before.

        The stable workload holds the nodes not on the canary; ``westworld.io/canary-nodes`` lists the node ids on
        the canary copy. Moving nodes to a new version adds them to the canary; moving them to the stable
        version takes them off it; a canary holding every node is promoted, an empty one is folded back.
        """
        version = self.inp.version or ""
        annotations: dict[str, str] = live["metadata"].get("annotations") or {}
        all_ids = [n.id for n in self.inp.target.nodes]
        on_canary = set(json.loads(annotations.get(ko.ANNOTATION_CANARY_NODES) or "[]"))
        canary_live = self.kube.get(self.kind, self.name + ko.CANARY_SUFFIX, self.namespace)
        canary_version = ko.image_tag(self._container(canary_live)["image"]) if canary_live else current
        replicas = int(annotations.get(ko.ANNOTATION_REPLICAS) or live["spec"].get("replicas", 1))
        slots = len(all_ids) or replicas
        moving = set(self.inp.node_ids)
        whole = not moving or (set(all_ids) <= moving if all_ids else len(moving) >= slots)
        keys = self.inp.node_ids or [self.name]
        if version == current:  # to the stable version: off the canary
            remaining = set() if whole else on_canary - moving
            if not on_canary and not canary_live:
                return dict.fromkeys(keys, annotations.get(ko.ANNOTATION_PREVIOUS, current))
            previous = {k: canary_version if k in on_canary or k == self.name else current for k in keys}
        else:
            if self.kind == "DaemonSet" and not whole:
                raise InvalidInput(
                    f"mesh action {self.inp.action_id}: DaemonSet {self.namespace}/{self.name} runs one Pod per "
                    "cluster node and cannot be split into a canary; roll it out whole (step 100%) or use a Deployment")
            remaining = on_canary | moving
            whole = whole or (set(all_ids) <= remaining if all_ids else len(remaining) >= slots)
            previous = dict.fromkeys(keys, current)
        if version != current and whole:
            self._set_stable(container, version, current)
            self._fold(replicas, canary_live is not None or ko.ANNOTATION_REPLICAS in annotations)
        elif not remaining:
            self._fold(replicas, canary_live is not None or ko.ANNOTATION_REPLICAS in annotations)
        else:
            count = min(replicas - 1, max(1, -(-len(remaining) * replicas // slots)))
            self._canary_step(live, container, canary_version if version == current else version, replicas,
                              count, sorted(remaining))
        return previous

    def _set_stable(self, container: Obj, version: str, current: str) -> None:
        image = f"{ko.image_repo(container['image'])}:{version}"
        self._apply(MANAGER_VERSION, {
            "metadata": {"annotations": {ko.ANNOTATION_PREVIOUS: current, ko.ANNOTATION_VERSION: version}},
            "spec": {"template": {"spec": {"containers": [{"name": container["name"], "image": image}]}}}})

    def _fold(self, replicas: int, canary_running: bool) -> None:
        """Back to one workload: the stable one scaled to the total, the canary copy and its bookkeeping gone."""
        if not canary_running:
            return
        self.kube.scale(self.kind, self.name, self.namespace, replicas)
        self.kube.delete(self.kind, self.name + ko.CANARY_SUFFIX, self.namespace)
        self._apply(MANAGER_CANARY, {})  # the canary manager's fields (replica total, canary nodes) are dropped

    def _canary_step(self, live: Obj, container: Obj, version: str, total: int, count: int,
                     nodes: list[str]) -> None:
        """``count`` replicas at ``version`` in ``<name>-canary``, the stable workload scaled to the rest."""
        self._apply(MANAGER_CANARY, {"metadata": {"annotations": {
            ko.ANNOTATION_REPLICAS: str(total), ko.ANNOTATION_CANARY_NODES: json.dumps(nodes)}}})
        template = json.loads(json.dumps(live["spec"]["template"]))
        template.setdefault("metadata", {}).setdefault("labels", {})[ko.LABEL_TRACK] = "canary"
        for c in template["spec"]["containers"]:
            if c["name"] == container["name"]:
                c["image"] = f"{ko.image_repo(container['image'])}:{version}"
        selector = {"matchLabels": {**live["spec"]["selector"].get("matchLabels", {}), ko.LABEL_TRACK: "canary"}}
        self._apply(MANAGER_CANARY, {
            "metadata": {"labels": {**(live["metadata"].get("labels") or {}), ko.LABEL_TRACK: "canary"},
                         "annotations": {ko.ANNOTATION_VERSION: version}},
            "spec": {"replicas": count, "selector": selector, "template": template}},
            name=self.name + ko.CANARY_SUFFIX)
        self.kube.scale(self.kind, self.name, self.namespace, total - count)

    def _set_config(self, live: Obj, container: Obj) -> None:
        env: list[Obj] = [dict(e) for e in container.get("env") or []]
        before = {e["name"]: e.get("value", "") for e in env}
        changed = {k: before.get(k, "") for k, v in self.inp.config.items() if before.get(k) != v}
        for entry in env:
            if entry["name"] in self.inp.config:
                entry.pop("valueFrom", None)
                entry["value"] = self.inp.config[entry["name"]]
        env += [{"name": k, "value": v} for k, v in sorted(self.inp.config.items()) if k not in before]
        annotations = live["metadata"].get("annotations") or {}
        previous = json.dumps(changed, sort_keys=True) if changed else annotations.get(
            ko.ANNOTATION_PREVIOUS_CONFIG, "{}")
        self._apply(MANAGER_CONFIG, {
            "metadata": {"annotations": {ko.ANNOTATION_PREVIOUS_CONFIG: previous}},
            "spec": {"template": {"spec": {"containers": [{"name": container["name"], "env": env}]}}}})
