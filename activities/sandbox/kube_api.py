"""The Kubernetes REST calls of the ``kubernetes`` sandbox backend, with the project's error mapping.

Writes are server-side apply (``application/apply-patch+yaml``, forced, with a named field manager), so repeating
one is a no-op. The ``kubernetes`` client is synchronous: callers run these methods in a thread.

Errors: an apiserver that does not answer (or answers 5xx/429) raises ``KubeUnreachable`` and the activity
retries; a 4xx caused by the input is a non-retryable ``InvalidInput`` naming the object; 401/403 is a
non-retryable ``ConfigError`` pointing at deploy/kube/worker-rbac.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from westworld import kube_objects as ko
from westworld.errors import CONFIG_ERROR, InvalidInput, KubeUnreachable, PermanentError

Obj = dict[str, Any]
FIELD_MANAGER = "westworld"
CHAOS_KINDS = {"NetworkChaos": "networkchaos", "PodChaos": "podchaos"}
_PLURALS = {"Namespace": "namespaces", "NetworkPolicy": "networkpolicies", "ResourceQuota": "resourcequotas",
            "Deployment": "deployments", "DaemonSet": "daemonsets", **CHAOS_KINDS}
_API_VERSIONS = {"Namespace": "v1", "NetworkPolicy": "networking.k8s.io/v1", "ResourceQuota": "v1",
                 "Deployment": "apps/v1", "DaemonSet": "apps/v1", "NetworkChaos": ko.CHAOS_API,
                 "PodChaos": ko.CHAOS_API}

def client_from_kubeconfig(path: Path | str, setting: str = "kube_config") -> k8s.ApiClient:
    """An ApiClient for the current context of a kubeconfig file (TLS as the file says); ``setting`` is what the
    file was configured by, named in the error when it is missing or not a kubeconfig."""
    if not Path(path).is_file():
        raise PermanentError(f"{setting}={path}: no such file; set {setting} to the cluster's kubeconfig file",
                             type=CONFIG_ERROR)
    try:
        api: k8s.ApiClient = k8s_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError,
            OSError) as err:
        raise PermanentError(f"{setting}={path} is not a usable kubeconfig file: {err}", type=CONFIG_ERROR) from err
    return api


def path_of(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    api = _API_VERSIONS[kind]
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    ns = f"/namespaces/{namespace}" if namespace and kind != "Namespace" else ""
    return f"{base}{ns}/{_PLURALS[kind]}" + (f"/{name}" if name else "")


class KubeApi:
    """The few REST calls the backend makes, with the project's error mapping (synchronous)."""

    def __init__(self, api: k8s.ApiClient, source: str = "") -> None:
        """``source``: where the cluster was configured (e.g. ``WESTWORLD_KUBE_CONFIG=<file>``), named in errors."""
        self.api = api
        self.host = str(api.configuration.host)
        if source:
            self.host += f" ({source})"

    def request(self, method: str, path: str, what: str, *, body: Obj | None = None,
                query: list[tuple[str, str]] | None = None, content_type: str = "application/json",
                missing_ok: bool = False) -> Obj | None:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            m, url, hdrs, payload, post = self.api.param_serialize(
                method, path, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"])
            response = self.api.call_api(m, url, hdrs, payload, post, _request_timeout=(5, 30))
            response.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeUnreachable(f"kube-apiserver at {self.host} is unreachable ({what}): {err}") from err
        status = int(response.status)
        text = response.data.decode(errors="replace") if response.data else ""
        if 200 <= status < 300:
            return json.loads(text) if text else {}
        if status == 404 and missing_ok:
            return None
        raise _error(status, text, what, self.host)

    def apply(self, obj: Obj, manager: str = FIELD_MANAGER) -> Obj:
        meta = obj["metadata"]
        what = f"{obj['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"
        result = self.request("PATCH", path_of(obj["kind"], meta["name"], meta.get("namespace")), f"apply {what}",
                              body=obj, query=[("fieldManager", manager), ("force", "true")],
                              content_type="application/apply-patch+yaml")
        assert result is not None
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.request("GET", path_of(kind, name, namespace), f"read {kind} {namespace or ''}/{name}",
                            missing_ok=True)

    def list_names(self, kind: str, namespace: str) -> list[str]:
        found = self.request("GET", path_of(kind, namespace=namespace), f"list {kind} in {namespace}",
                             missing_ok=True)
        return [item["metadata"]["name"] for item in (found or {}).get("items", [])]

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete (background propagation); False if it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        done = self.request("DELETE", path_of(kind, name, namespace), f"delete {kind} {namespace or ''}/{name}",
                            body=body, missing_ok=True)
        return done is not None

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        self.request("PATCH", path_of(kind, name, namespace) + "/scale", f"scale {kind} {namespace}/{name}",
                     body={"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")

    def chaos_kinds(self) -> set[str]:
        """The Chaos Mesh kinds this cluster serves (discovered, not assumed)."""
        found = self.request("GET", f"/apis/{ko.CHAOS_API}", "discover Chaos Mesh", missing_ok=True)
        served = {r.get("kind") for r in (found or {}).get("resources", []) if "/" not in r.get("name", "")}
        return {kind for kind in CHAOS_KINDS if kind in served}


def _error(status: int, text: str, what: str, host: str) -> Exception:
    try:
        message = json.loads(text).get("message", text)
    except ValueError:
        message = text
    if status in (401, 403):
        return PermanentError(
            f"{what} refused by the kube-apiserver at {host} ({status}): {message}; the worker's credentials "
            "need the permissions in deploy/kube/worker-rbac.yaml", type=CONFIG_ERROR)
    if 400 <= status < 500 and status != 429:
        return InvalidInput(f"{what}: the kube-apiserver refused it ({status}): {message}")
    return KubeUnreachable(f"{what}: kube-apiserver at {host} answered {status}: {message}")
