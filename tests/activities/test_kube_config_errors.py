"""Every way the worker's Kubernetes access can be wrong is reported naming the setting that fixes it,
``WESTWORLD_KUBE_CONFIG``: not set, not a file, not a kubeconfig, a cluster that does not answer (a real closed
port), through the worker's own wiring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from westworld.errors import WestworldError
from westworld.sandbox import Arm, Backend, ProvisionInput, Workload
from workers.settings import Settings
from workers.stack.processes import free_port
from workers.wiring.experiments import sandbox_activities

SETTING = "WESTWORLD_KUBE_CONFIG"
PROVISION = ProvisionInput(backend=Backend.KUBERNETES, sandbox_id="cfg-test-baseline", arm=Arm.BASELINE,
                           workload=Workload(version="1.4.0", nodes=1))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_a_kubernetes_sandbox_without_a_configured_cluster(tmp_path: Path, http: httpx.AsyncClient) -> None:
    acts = sandbox_activities(Settings(data_dir=tmp_path, kube_config=""), http)
    with pytest.raises(WestworldError) as err:
        await acts.provision_sandbox(PROVISION)
    assert "'kubernetes' is not configured" in str(err.value) and SETTING in str(err.value)


@pytest.mark.parametrize("content", [None, "this: is: not a kubeconfig\n", "apiVersion: v1\nkind: Config\n"])
def test_a_kubeconfig_that_is_missing_or_unreadable(tmp_path: Path, http: httpx.AsyncClient,
                                                     content: str | None) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(WestworldError) as err:
        sandbox_activities(Settings(data_dir=tmp_path, kube_config=str(path)), http)
    assert SETTING in str(err.value) and str(path) in str(err.value)


async def test_a_cluster_that_does_not_answer(tmp_path: Path, http: httpx.AsyncClient) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    acts = sandbox_activities(Settings(data_dir=tmp_path, kube_config=str(path)), http)
    with pytest.raises(WestworldError) as err:
        await acts.provision_sandbox(PROVISION)
    assert "unreachable" in str(err.value) and f"{SETTING}={path}" in str(err.value)
