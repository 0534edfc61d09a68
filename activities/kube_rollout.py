"""Mesh actions on a Kubernetes Deployment or DaemonSet: set a version (whole or canary), set config, restart.

See ``activities/sandbox_kubernetes.py`` for the behaviour. Runs synchronously (the caller uses a thread).
Every write is a server-side apply whose field manager is the action kind's own, so repeating an action changes
nothing and one kind of action never drops the fields another one set.
"""

from __future__ import annotations

import json
import re
from typing import Any

from activities.kube_api import KubeApi
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
        if self.inp.action is MeshAction.SET_VERSION:
            previous = self._set_version(live, container, current)
        elif self.inp.action is MeshAction.SET_CONFIG:
            self._set_config(live, container)
            previous = current
        else:
            self._apply(MANAGER_RESTART, {"spec": {"template": {"metadata": {"annotations": {
                ko.ANNOTATION_RESTART: self.inp.action_id}}}}})
            previous = current
        keys = self.inp.node_ids or [self.name]
        return MeshActionResult(action_id=self.inp.action_id, applied=list(keys),
                                previous=dict.fromkeys(keys, previous))

    def _container(self, live: Obj) -> Obj:
        containers: list[Obj] = live["spec"]["template"]["spec"]["containers"]
        return next((c for c in containers if c["name"] == ko.CONTAINER_NAME), containers[0])

    def _apply(self, manager: str, patch: Obj, name: str | None = None) -> Obj:
        obj = {"apiVersion": "apps/v1", "kind": self.kind,
               "metadata": {"name": name or self.name, "namespace": self.namespace}} | {
                   k: v for k, v in patch.items() if k != "metadata"}
        obj["metadata"] |= patch.get("metadata", {})
        return self.kube.apply(obj, manager)

    def _set_version(self, live: Obj, container: Obj, current: str) -> str:
        version = self.inp.version or ""
        annotations: dict[str, str] = live["metadata"].get("annotations") or {}
        previous = current if current != version else annotations.get(ko.ANNOTATION_PREVIOUS, current)
        total = int(annotations.get(ko.ANNOTATION_REPLICAS) or live["spec"].get("replicas", 1))
        share = len(self.inp.node_ids)
        if self.kind == "Deployment" and 0 < share < total:
            self._canary_step(live, container, version, total, share)
            return current
        image = f"{ko.image_repo(container['image'])}:{version}"
        self._apply(MANAGER_VERSION, {
            "metadata": {"annotations": {ko.ANNOTATION_PREVIOUS: previous, ko.ANNOTATION_VERSION: version}},
            "spec": {"template": {"spec": {"containers": [{"name": container["name"], "image": image}]}}}})
        if ko.ANNOTATION_REPLICAS in annotations:  # a canary was running: fold it back into the stable workload
            self.kube.scale(self.kind, self.name, self.namespace, total)
            self.kube.delete(self.kind, self.name + ko.CANARY_SUFFIX, self.namespace)
            self._apply(MANAGER_CANARY, {})  # the canary manager's fields (the replica total) are dropped
        return previous

    def _canary_step(self, live: Obj, container: Obj, version: str, total: int, share: int) -> None:
        """``share`` replicas at ``version`` in ``<name>-canary``, the stable workload scaled to the rest."""
        self._apply(MANAGER_CANARY, {"metadata": {"annotations": {ko.ANNOTATION_REPLICAS: str(total)}}})
        template = json.loads(json.dumps(live["spec"]["template"]))
        template.setdefault("metadata", {}).setdefault("labels", {})[ko.LABEL_TRACK] = "canary"
        for c in template["spec"]["containers"]:
            if c["name"] == container["name"]:
                c["image"] = f"{ko.image_repo(container['image'])}:{version}"
        selector = {"matchLabels": {**live["spec"]["selector"].get("matchLabels", {}), ko.LABEL_TRACK: "canary"}}
        self._apply(MANAGER_CANARY, {
            "metadata": {"labels": {**(live["metadata"].get("labels") or {}), ko.LABEL_TRACK: "canary"},
                         "annotations": {ko.ANNOTATION_VERSION: version}},
            "spec": {"replicas": share, "selector": selector, "template": template}},
            name=self.name + ko.CANARY_SUFFIX)
        self.kube.scale(self.kind, self.name, self.namespace, total - share)

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
