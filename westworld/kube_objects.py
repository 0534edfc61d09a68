"""The Kubernetes objects of a sandbox, rendered from the sandbox models (pure: no client, no I/O).

A sandbox ``<id>`` is the namespace ``ww-<id>`` holding:

- ``default-deny``: a NetworkPolicy selecting every Pod, with no rules, for ingress and egress;
- ``westworld-allow``: the allow-list: traffic between the sandbox's own Pods, DNS (port 53) anywhere, the
  ``egress_allow`` CIDRs (with their port when given), and metrics scrapes from namespaces labelled
  ``westworld.io/monitoring=true``;
- ``westworld-quota``: a ResourceQuota sized from the node count (room for a canary and a rolling surge);
- the workload ``mesh-node``: a Deployment (``replicas`` = nodes) or a DaemonSet, image ``image:version``, the
  config as environment variables, requests and limits on every container (the quota requires them).

Chaos is Chaos Mesh (``chaos-mesh.org/v1alpha1``): ``NetworkChaos`` for latency, loss and partition, ``PodChaos``
(pod-kill) for a node kill. Pods of a Deployment have generated names, so a fault on ``n`` chosen node indexes
selects ``n`` of the sandbox's Pods (Chaos Mesh mode ``fixed``), not those indexes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from pydantic import BaseModel, Field

from westworld.errors import InvalidInput
from westworld.sandbox import Fault, FaultKind, ProvisionInput

Obj = dict[str, Any]

WORKLOAD_NAME = "mesh-node"
CONTAINER_NAME = "mesh-node"
CANARY_SUFFIX = "-canary"
LABEL_SANDBOX = "westworld.io/sandbox"
LABEL_ARM = "westworld.io/arm"
LABEL_ISOLATED = "westworld.io/isolated"
LABEL_MONITORING = "westworld.io/monitoring"
LABEL_TRACK = "westworld.io/track"
LABEL_APP = "app.kubernetes.io/name"
ANNOTATION_VERSION = "westworld.io/version"
ANNOTATION_PREVIOUS = "westworld.io/previous-version"
ANNOTATION_PREVIOUS_CONFIG = "westworld.io/previous-config"
ANNOTATION_REPLICAS = "westworld.io/replicas-total"
ANNOTATION_CANARY_NODES = "westworld.io/canary-nodes"
ANNOTATION_FAULT = "westworld.io/fault-id"
ANNOTATION_RESTART = "westworld.io/restarted-by"
CHAOS_API = "chaos-mesh.org/v1alpha1"
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
METRICS_PORT = 9100

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubeLimits(BaseModel):
    """Per-node resources of the workload; the namespace quota is derived from them."""

    cpu_request_m: int = Field(100, ge=1, description="CPU request per node, millicores.")
    cpu_limit_m: int = Field(500, ge=1, description="CPU limit per node, millicores.")
    memory_request_mi: int = Field(128, ge=1, description="Memory request per node, MiB.")
    memory_limit_mi: int = Field(256, ge=1, description="Memory limit per node, MiB.")


def namespace_name(sandbox_id: str) -> str:
    """``ww-<sandbox_id>``; a sandbox id that cannot make a namespace name is refused, naming the field."""
    name = f"ww-{sandbox_id}"
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise InvalidInput(
            f"sandbox_id {sandbox_id!r} cannot name a Kubernetes namespace: 'ww-' + sandbox_id must be a DNS label "
            "(lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)")
    return name


def object_name(key: str, prefix: str) -> str:
    """A DNS-1123 name derived from a free-form key (a fault id), stable and unique by a short hash."""
    slug = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{prefix}-{slug}-{digest}" if slug else f"{prefix}-{digest}"


def image_tag(image: str) -> str:
    """The tag of an image reference (``latest`` when there is none)."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def image_repo(image: str) -> str:
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    name = last.split(":", 1)[0]
    return f"{head}/{name}" if head else name


def parse_egress(entry: str) -> tuple[str, int | None]:
    """``CIDR``, ``IP``, ``CIDR:port``, ``IP:port`` or ``[IPv6]:port`` -> (CIDR, port or None)."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(entry, rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(entry, port_text)
    else:
        host = text
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise InvalidInput(
            f"egress_allow entry {entry!r} is not a CIDR or IP[:port]: a Kubernetes NetworkPolicy selects "
            "addresses, not host names") from None
    return str(network), port


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidInput(f"egress_allow entry {entry!r}: port {text!r} is not a number in 1..65535")
    return int(text)


def sandbox_labels(inp: ProvisionInput) -> dict[str, str]:
    return {LABEL_SANDBOX: inp.sandbox_id, LABEL_ARM: inp.arm.value}


def namespace_object(inp: ProvisionInput) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace_name(inp.sandbox_id),
                         "labels": {**sandbox_labels(inp), LABEL_ISOLATED: "true"}}}


def network_policies(inp: ProvisionInput, namespace: str) -> list[Obj]:
    egress_rules: list[Obj] = [
        {"to": [{"podSelector": {}}]},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]
    for entry in inp.egress_allow:
        cidr, port = parse_egress(entry)
        rule: Obj = {"to": [{"ipBlock": {"cidr": cidr}}]}
        if port is not None:
            rule["ports"] = [{"protocol": "TCP", "port": port}]
        egress_rules.append(rule)
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace, "labels": sandbox_labels(inp)},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    allow = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "westworld-allow", "namespace": namespace, "labels": sandbox_labels(inp)},
             "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                      "ingress": [
                          {"from": [{"podSelector": {}}]},
                          {"from": [{"namespaceSelector": {"matchLabels": {LABEL_MONITORING: "true"}}}],
                           "ports": [{"protocol": "TCP", "port": METRICS_PORT}]}],
                      "egress": egress_rules}}
    return [deny, allow]


def cpu(millicores: int) -> str:
    """A CPU quantity in the apiserver's canonical form (``4`` not ``4000m``): a non-canonical value would make
    every re-apply look like a change to server-side apply."""
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def memory(mebibytes: int) -> str:
    """A memory quantity in canonical binary-SI form (``1Gi`` not ``1024Mi``)."""
    for unit, size in (("Ti", 1024 * 1024), ("Gi", 1024)):
        if mebibytes % size == 0:
            return f"{mebibytes // size}{unit}"
    return f"{mebibytes}Mi"


def resource_quota(inp: ProvisionInput, namespace: str, limits: KubeLimits) -> Obj:
    pods = inp.workload.nodes * 2 + 2  # a full canary copy plus a rolling-update surge
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "westworld-quota", "namespace": namespace, "labels": sandbox_labels(inp)},
            "spec": {"hard": {
                "pods": str(pods),
                "requests.cpu": cpu(pods * limits.cpu_request_m),
                "limits.cpu": cpu(pods * limits.cpu_limit_m),
                "requests.memory": memory(pods * limits.memory_request_mi),
                "limits.memory": memory(pods * limits.memory_limit_mi),
                "services": "4", "services.loadbalancers": "0", "services.nodeports": "0"}}}


def env_list(config: dict[str, str]) -> list[Obj]:
    return [{"name": key, "value": value} for key, value in sorted(config.items())]


def workload_object(inp: ProvisionInput, namespace: str, limits: KubeLimits) -> Obj:
    kind = inp.workload.kind
    if kind not in WORKLOAD_KINDS:
        raise InvalidInput(f"workload.kind {kind!r} is not one of {', '.join(WORKLOAD_KINDS)}")
    labels = {LABEL_APP: WORKLOAD_NAME, **sandbox_labels(inp)}
    container = {
        "name": CONTAINER_NAME, "image": f"{inp.workload.image}:{inp.workload.version}",
        "env": env_list(inp.workload.config),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": {
            "requests": {"cpu": cpu(limits.cpu_request_m), "memory": memory(limits.memory_request_mi)},
            "limits": {"cpu": cpu(limits.cpu_limit_m), "memory": memory(limits.memory_limit_mi)}},
    }
    spec: Obj = {
        "selector": {"matchLabels": {LABEL_APP: WORKLOAD_NAME, LABEL_SANDBOX: inp.sandbox_id}},
        "template": {"metadata": {"labels": labels, "annotations": {
            "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}},
            "spec": {"containers": [container]}},
    }
    if kind == "Deployment":
        spec["replicas"] = inp.workload.nodes
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": WORKLOAD_NAME, "namespace": namespace, "labels": labels,
                         "annotations": {ANNOTATION_VERSION: inp.workload.version}},
            "spec": spec}


def sandbox_objects(inp: ProvisionInput, limits: KubeLimits) -> list[Obj]:
    """Everything a sandbox holds, in creation order (namespace first, workload last)."""
    namespace = namespace_name(inp.sandbox_id)
    workload = workload_object(inp, namespace, limits)  # validates the kind before anything is created
    return [namespace_object(inp), *network_policies(inp, namespace), resource_quota(inp, namespace, limits),
            workload]


def _duration(fault: Fault) -> str:
    seconds = max(1, int(fault.duration.total_seconds()))
    return f"{seconds}s"


def chaos_object(namespace: str, sandbox_id: str, fault: Fault, fault_id: str) -> Obj:
    """The Chaos Mesh resource for one fault: NetworkChaos (latency, loss, partition) or PodChaos (node kill)."""
    selector: Obj = {"namespaces": [namespace], "labelSelectors": {LABEL_APP: WORKLOAD_NAME}}
    mode: Obj = {"mode": "fixed", "value": str(len(fault.nodes))} if fault.nodes else {"mode": "all"}
    meta = {"name": object_name(fault_id, "ww"), "namespace": namespace,
            "labels": {LABEL_SANDBOX: sandbox_id}, "annotations": {ANNOTATION_FAULT: fault_id}}
    if fault.kind is FaultKind.NODE_KILL:
        return {"apiVersion": CHAOS_API, "kind": "PodChaos", "metadata": meta,
                "spec": {"action": "pod-kill", **mode, "selector": selector}}
    spec: Obj = {**mode, "selector": selector, "duration": _duration(fault)}
    if fault.kind is FaultKind.LATENCY:
        spec |= {"action": "delay", "delay": {"latency": f"{fault.latency_ms}ms", "jitter": f"{fault.jitter_ms}ms",
                                              "correlation": "0"}}
    elif fault.kind is FaultKind.PACKET_LOSS:
        spec |= {"action": "loss", "loss": {"loss": f"{fault.loss_pct:g}", "correlation": "0"}}
    else:
        spec |= {"action": "partition", "direction": "both",
                 "target": {"mode": "all", "selector": selector}}
    return {"apiVersion": CHAOS_API, "kind": "NetworkChaos", "metadata": meta, "spec": spec}
