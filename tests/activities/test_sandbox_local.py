"""The local sandbox backend against real mesh nodes and a real Prometheus, in both modes.

``netns`` (root): nodes in network namespaces on a bridge, kernel chaos where the kernel allows it.
``userspace`` (forced with ``namespaces=False``): nodes on 127.0.0.1, chaos through the nodes' admin API.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.sandbox import netns
from activities.sandbox.backend import SandboxActivities
from activities.sandbox.local import LocalSandbox
from activities.sandbox.nodes import alive
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.polling import eventually
from tests.fixtures.prometheus import PrometheusServer
from westworld.errors import BACKEND_UNAVAILABLE, INVALID_INPUT, WestworldError
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

MODES = ["netns", "userspace"]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture(params=MODES)
def sandbox(request: pytest.FixtureRequest, http: httpx.AsyncClient, prometheus: PrometheusServer,
            tmp_path: Path) -> LocalSandbox:
    if request.param == "netns" and (reason := netns.unavailable_reason()) is not None:
        pytest.skip(f"network-namespace mode cannot run here: {reason}")
    return LocalSandbox(http, tmp_path, prometheus.targets_dir, namespaces=request.param == "netns")


def provision_input(nodes: int = 3, egress: list[str] | None = None) -> ProvisionInput:
    return ProvisionInput(backend=Backend.LOCAL, sandbox_id=f"t-{uuid.uuid4().hex[:8]}", arm=Arm.BASELINE,
                          workload=Workload(version="1.4.0", nodes=nodes), egress_allow=egress or [])


async def query(http: httpx.AsyncClient, prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    answer = (await http.get(f"{prometheus.url}/api/v1/query", params={"query": promql})).json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def scalar(http: httpx.AsyncClient, prometheus: PrometheusServer, promql: str) -> float:
    result = await query(http, prometheus, promql)
    return float(result[0]["value"][1]) if result else float("nan")


def running_nodes() -> set[str]:
    """Ids of the mesh-node processes running on this machine (from their command lines)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"meshnode.node" in args and b"--id" in args:
            found.add(args[args.index(b"--id") + 1].decode())
    return found


def fault(ref: SandboxRef, kind: FaultKind, nodes: list[int] | None = None, **knobs: Any) -> FaultInput:
    return FaultInput(sandbox=ref, fault_id=f"{ref.sandbox_id}-{kind.value}",
                      fault=Fault(kind=kind, duration=timedelta(seconds=30), nodes=nodes or [], **knobs))


async def test_lifecycle_scrape_latency_kill_teardown(sandbox: LocalSandbox, http: httpx.AsyncClient,
                                                      prometheus: PrometheusServer, tmp_path: Path) -> None:
    inp = provision_input()
    progress: list[str] = []
    ref = await sandbox.provision(inp, progress.append)
    sid = inp.sandbox_id
    try:
        mode = "netns" if sandbox._namespaces else "userspace"
        assert ref.chaos_mode.startswith(mode), ref.chaos_mode
        assert progress[-1].startswith(f"sandbox {sid} ready")
        assert await sandbox.provision(inp, progress.append) == ref  # idempotent by sandbox_id
        victim = ref.nodes[2]
        pid = int(json.loads((tmp_path / "sandboxes" / sid / "state.json").read_text())["nodes"][2]["pid"])
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: asyncio.sleep(0, alive(pid)), lambda running: not running)
        assert await sandbox.provision(inp, progress.append) == ref  # a node that died is restarted
        assert (await http.get(f"{victim.admin_url}/status")).json()["uptime_s"] < 5

        # Scraped by the real Prometheus, each node labelled sandbox/arm/node.
        up = await eventually(lambda: query(http, prometheus, f'up{{sandbox="{sid}"}} == 1'), lambda r: len(r) == 3)
        assert {r["metric"]["node"] for r in up} == {n.id for n in ref.nodes}
        assert {r["metric"]["arm"] for r in up} == {"baseline"}

        latency = (f'sum(rate(mesh_message_latency_seconds_sum{{sandbox="{sid}"}}[2s])) / '
                   f'sum(rate(mesh_message_latency_seconds_count{{sandbox="{sid}"}}[2s]))')
        base = await eventually(lambda: scalar(http, prometheus, latency), lambda v: not math.isnan(v))
        applied = await sandbox.apply_fault(fault(ref, FaultKind.LATENCY, latency_ms=60))
        assert applied.nodes == [n.id for n in ref.nodes]
        # Each probe crosses three links, each delayed 60 ms by the node that sends on it.
        await eventually(lambda: scalar(http, prometheus, latency), lambda v: v > base + 0.1)
        await sandbox.clear_fault(fault(ref, FaultKind.LATENCY, latency_ms=60))
        await eventually(lambda: scalar(http, prometheus, latency), lambda v: v < base + 0.03)

        killed = ref.nodes[1].id
        await sandbox.apply_fault(fault(ref, FaultKind.NODE_KILL, [1]))
        await eventually(lambda: query(http, prometheus, f'up{{node="{killed}"}} == 0'), lambda r: len(r) == 1)
        await sandbox.clear_fault(fault(ref, FaultKind.NODE_KILL, [1]))
        await eventually(lambda: query(http, prometheus, f'up{{node="{killed}"}} == 1'), lambda r: len(r) == 1)
    finally:
        result = await sandbox.teardown(ref)
    assert sum(r.startswith("process ") for r in result.removed) == 3
    assert not (prometheus.targets_dir / f"{sid}.json").exists()
    assert not await netns.list_netns(sid)
    bridge = await asyncio.to_thread(subprocess.run, ["ip", "link", "show", netns.bridge_name(sid)], check=False,
                                     capture_output=True)
    assert bridge.returncode != 0
    assert not running_nodes() & {n.id for n in ref.nodes}
    for node in ref.nodes:  # gone, and (netns) its address unreachable from the host, not routed elsewhere
        with pytest.raises(httpx.TransportError):
            await http.get(f"{node.admin_url}/status")
    assert (await sandbox.teardown(ref)).removed == []  # repeated teardown: nothing left, no error


async def test_loss_and_partition_lower_delivery(sandbox: LocalSandbox, http: httpx.AsyncClient,
                                                 prometheus: PrometheusServer) -> None:
    ref = await sandbox.provision(provision_input(4), lambda _m: None)
    sid = ref.sandbox_id
    ratio = (f'sum(rate(mesh_messages_delivered_total{{sandbox="{sid}"}}[2s])) / '
             f'sum(rate(mesh_messages_sent_total{{sandbox="{sid}"}}[2s]))')
    try:
        await eventually(lambda: scalar(http, prometheus, ratio), lambda v: v > 0.9)
        applied = await sandbox.apply_fault(fault(ref, FaultKind.PACKET_LOSS, loss_pct=50))
        assert applied.mode in ("netem", "nftables", "userspace")
        await eventually(lambda: scalar(http, prometheus, ratio), lambda v: v < 0.5)
        await sandbox.clear_fault(fault(ref, FaultKind.PACKET_LOSS, loss_pct=50))
        await eventually(lambda: scalar(http, prometheus, ratio), lambda v: v > 0.9)

        # Nodes 0 and 1 cut off from 2 and 3: only probes that stay on one side can arrive.
        await sandbox.apply_fault(fault(ref, FaultKind.PARTITION, [0, 1]))
        await eventually(lambda: scalar(http, prometheus, ratio), lambda v: v < 0.6)
        await sandbox.clear_fault(fault(ref, FaultKind.PARTITION, [0, 1]))
        await eventually(lambda: scalar(http, prometheus, ratio), lambda v: v > 0.9)
    finally:
        await sandbox.teardown(ref)


async def test_netns_egress_reaches_only_peers(http: httpx.AsyncClient, prometheus: PrometheusServer,
                                               tmp_path: Path) -> None:
    if (reason := netns.unavailable_reason()) is not None:
        pytest.skip(f"network-namespace mode cannot run here: {reason}")
    sandbox = LocalSandbox(http, tmp_path, prometheus.targets_dir)
    ref = await sandbox.provision(provision_input(2), lambda _m: None)
    try:
        if "nftables" not in ref.chaos_mode:
            pytest.skip(f"nft is not installed, egress is not restricted: {ref.chaos_mode}")
        # A service on the host, reachable over the bridge address without the egress rules.
        with socket.socket() as server:
            server.bind(("0.0.0.0", 0))  # noqa: S104 - the sandbox's bridge address is the one under test
            server.listen()
            port = server.getsockname()[1]
            bridge = ref.nodes[0].address.rsplit(".", 1)[0] + ".1"
            peer = ref.nodes[1].admin_url.removeprefix("http://")
            ns = netns.netns_name(ref.sandbox_id, 0)
            probe = ("import socket,sys; h,p=sys.argv[1].split(':'); s=socket.socket(); s.settimeout(1);"
                     "sys.exit(s.connect_ex((h,int(p))))")
            to_host = await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", ns, sys.executable, "-c",
                                                               probe, f"{bridge}:{port}"], check=False)
            to_peer = await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", ns, sys.executable, "-c",
                                                               probe, peer], check=False)
        assert to_peer.returncode == 0
        assert to_host.returncode != 0
    finally:
        await sandbox.teardown(ref)


async def test_concurrent_netns_sandboxes_get_distinct_subnets(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """Two backends with separate data dirs (like two workers, or a worker and a test run) provisioning at once."""
    if (reason := netns.unavailable_reason()) is not None:
        pytest.skip(f"network-namespace mode cannot run here: {reason}")
    backends = [LocalSandbox(http, tmp_path / name, tmp_path / "targets") for name in ("a", "b")]
    inputs = [(b, provision_input(1)) for b in backends for _ in range(3)]
    refs = await asyncio.gather(*(b.provision(i, lambda _m: None) for b, i in inputs))
    try:
        subnets = [ref.nodes[0].address.split(".")[2] for ref in refs]
        assert len(set(subnets)) == 6, subnets
    finally:
        for (backend, _), ref in zip(inputs, refs, strict=True):
            await backend.teardown(ref)


async def test_activities_dispatch_and_type_errors(mesh_nodes: SandboxRef, local_sandbox: LocalSandbox) -> None:
    env = InterceptedEnvironment()
    acts = SandboxActivities({Backend.LOCAL: local_sandbox})
    with pytest.raises(ApplicationError) as refused:
        await env.run(acts.provision_sandbox, ProvisionInput(
            backend=Backend.KUBERNETES, sandbox_id="k", arm=Arm.TREATMENT, workload=Workload(version="1.4.0")))
    assert refused.value.type == BACKEND_UNAVAILABLE and refused.value.non_retryable
    assert "'kubernetes' is not configured" in refused.value.message
    with pytest.raises(ApplicationError) as bad:
        await env.run(acts.apply_fault, fault(mesh_nodes, FaultKind.LATENCY, [7], latency_ms=5))
    assert bad.value.type == INVALID_INPUT and bad.value.non_retryable and "[7]" in bad.value.message

    target = MeshTarget(nodes=mesh_nodes.nodes)
    first, second = mesh_nodes.nodes[0].id, mesh_nodes.nodes[1].id
    action = MeshActionInput(target=target, action=MeshAction.SET_VERSION, node_ids=[first, second],
                             version="1.5.0-rc1", action_id=f"test:{uuid.uuid4().hex}:canary")
    result = await env.run(acts.execute_mesh_action, action)
    assert result.previous == {first: "1.4.0", second: "1.4.0"}
    assert await env.run(acts.execute_mesh_action, action) == result  # a retry still reports the old versions
    async with httpx.AsyncClient() as http:
        status = (await http.get(f"{mesh_nodes.nodes[0].admin_url}/status")).json()
        untouched = (await http.get(f"{mesh_nodes.nodes[2].admin_url}/status")).json()
    assert status["version"] == "1.5.0-rc1" and untouched["version"] == "1.4.0"
    with pytest.raises(ApplicationError) as unknown:
        await env.run(acts.execute_mesh_action, action.model_copy(update={"node_ids": ["nope"]}))
    assert unknown.value.type == INVALID_INPUT and "nope" in unknown.value.message


async def test_bad_input_is_refused_and_leaves_nothing(sandbox: LocalSandbox, tmp_path: Path) -> None:
    bad_knob = provision_input(2).model_copy(update={"workload": Workload(version="1.4.0", nodes=2,
                                                                          config={"relay_speed": "9"})})
    with pytest.raises(WestworldError) as err:
        await sandbox.provision(bad_knob, lambda _m: None)
    assert err.value.type == INVALID_INPUT and "relay_speed" in err.value.message
    assert bad_knob.sandbox_id in err.value.message
    assert not (tmp_path / "sandboxes" / bad_knob.sandbox_id).exists()

    bad_egress = provision_input(2, egress=["not-an-address"])
    if sandbox._namespaces and netns.nft_available():  # the allow-list is only enforced (and parsed) by nftables
        with pytest.raises(WestworldError) as err:
            await sandbox.provision(bad_egress, lambda _m: None)
        assert err.value.type == INVALID_INPUT and "not-an-address" in err.value.message
        assert not await netns.list_netns(bad_egress.sandbox_id)
        assert not (tmp_path / "sandboxes" / bad_egress.sandbox_id).exists()
    assert not running_nodes() & {f"{bad_knob.sandbox_id}-n0", f"{bad_egress.sandbox_id}-n0"}


NOT_ROOT_SCRIPT = """
import asyncio, json, sys
from datetime import timedelta
from pathlib import Path
import httpx
from activities.sandbox.nodes import alive
from activities.sandbox.local import LocalSandbox
from westworld.sandbox import Arm, Backend, Fault, FaultInput, FaultKind, ProvisionInput, Workload

async def main() -> None:
    data = Path(sys.argv[1])
    async with httpx.AsyncClient(timeout=5) as http:
        sandbox = LocalSandbox(http, data, data / "targets")
        ref = await sandbox.provision(ProvisionInput(backend=Backend.LOCAL, sandbox_id="nonroot", arm=Arm.BASELINE,
                                                     workload=Workload(version="1.4.0", nodes=2)), lambda _m: None)
        fault = FaultInput(sandbox=ref, fault_id="f1", fault=Fault(kind=FaultKind.LATENCY,
                           duration=timedelta(seconds=5), latency_ms=25))
        applied = await sandbox.apply_fault(fault)
        status = (await http.get(ref.nodes[0].admin_url + "/status")).json()
        removed = (await sandbox.teardown(ref)).removed
        print(json.dumps({"mode": ref.chaos_mode, "fault_mode": applied.mode, "faults": status["faults"],
                          "address": ref.nodes[0].address, "removed": removed}))

asyncio.run(main())
"""


# The top-level packages NOT_ROOT_SCRIPT and the mesh nodes it starts import, found by importing them (below);
# httpx opens its transport (httpcore, anyio, ...) only with a client: their distributions' requirements count too.
_IMPORTS_PROBE = """
import json, sys
import httpx, activities.sandbox.local, activities.sandbox.nodes, meshnode.node, westworld.sandbox
print(json.dumps(sorted({n.split(".")[0] for n, m in list(sys.modules.items()) if getattr(m, "__file__", None)})))
"""


def _readable_copy(dest: Path) -> Path:
    """What the unprivileged run needs (the project's packages it imports and their installed distributions),
    copied under ``dest`` where any user can read it, so the test passes wherever the clone and its venv live (a
    clone under ``mktemp -d`` is a 0700 folder: nobody cannot read its venv or its code). Returns the import root."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    repo = Path(__file__).resolve().parents[2]
    probe = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE], capture_output=True, text=True, check=True,
                           cwd=repo)
    tops = set(json.loads(probe.stdout))
    root = dest / "lib"
    root.mkdir(parents=True)
    for top in sorted(t for t in tops if (repo / t / "__init__.py").exists()):
        shutil.copytree(repo / top, root / top, ignore=shutil.ignore_patterns("__pycache__"))
    by_top = md.packages_distributions()
    todo = {d for t in tops for d in by_top.get(t, []) if not (repo / t).exists()}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        dist = md.distribution(name)
        seen.add(name)
        for req in dist.requires or []:
            r = Requirement(req)
            if (r.marker is None or r.marker.evaluate({"extra": ""})) and r.name not in seen:
                todo.add(r.name)
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if ".." not in f.parts and src.is_file():
                (root / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / f)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


async def test_not_root_runs_in_userspace_mode_and_says_why() -> None:
    """The same backend run by an unprivileged user (setpriv to nobody) picks the degraded mode by itself."""
    # The venv's interpreter may live under /root (unreadable for nobody): run the system python3.11 on a readable
    # copy of what the run imports (see _readable_copy).
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("needs root, setpriv and a system python3.11 to run the backend as an unprivileged user")
    work = Path(tempfile.mkdtemp(prefix="ww-nonroot-"))
    data = work / "data"
    try:
        lib = await asyncio.to_thread(_readable_copy, work)
        data.mkdir()
        data.chmod(0o777)
        done = await asyncio.to_thread(
            subprocess.run, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c",
                             NOT_ROOT_SCRIPT, str(data)], capture_output=True, text=True, check=False,
            cwd=lib, timeout=60, env={**os.environ, "PYTHONPATH": str(lib)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["mode"].startswith("userspace: not running as root")
    assert seen["fault_mode"] == "userspace" and seen["faults"][0]["delay_ms"] == 25
    assert seen["address"].startswith("127.0.0.1:")
    assert sum(r.startswith("process ") for r in seen["removed"]) == 2
