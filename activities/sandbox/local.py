"""The ``local`` sandbox backend: N mesh-node processes on this machine, scraped by the embedded Prometheus.

Two modes, chosen at provision and reported in ``SandboxRef.chaos_mode``:

- **netns** (root, ``ip netns`` works): each node in its own network namespace ``ww-<short id>-<i>`` with a veth
  pair on a bridge made for the sandbox, addressed from ``10.213.<n>.0/24`` (no default route, no NAT). Egress is
  limited by nftables to the peers and ``egress_allow``. Chaos: ``tc netem`` on the node's ``eth0`` when the
  kernel has it; otherwise loss and partitions are nftables rules in the node's namespace and latency is
  applied by the node itself (its admin API).
- **userspace** (not root, namespaces unavailable, or forced): nodes on 127.0.0.1; every fault goes through the
  node's admin API (``POST /fault``): delayed sends, random drops, traffic from/to listed peers dropped.

Node kill is SIGKILL in both modes; clearing it restarts the node with its current version and config.
State lives in ``<data dir>/sandboxes/<sandbox id>/state.json``; Prometheus targets in ``<targets>/<id>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from activities.sandbox import faults as local_faults
from activities.sandbox import netns
from activities.sandbox.nodes import (
    ADMIN_PORT,
    MESH_PORT,
    METRICS_PORT,
    NodeState,
    SandboxState,
    alive,
    free_ports,
    is_node,
    kill,
)
from westworld.errors import SANDBOX_FAILED, InvalidInput, NetError, PermanentError
from westworld.mesh import behaviour
from westworld.sandbox import (
    FaultApplied,
    FaultInput,
    FaultKind,
    MeshAction,
    MeshActionInput,
    MeshActionResult,
    NodeRef,
    ProvisionInput,
    SandboxRef,
    TeardownResult,
)


class LocalSandbox:
    """Local sandboxes under ``data_dir``; ``namespaces=False`` forces the userspace (degraded) mode."""

    def __init__(self, http: httpx.AsyncClient, data_dir: Path, targets_dir: Path, *, namespaces: bool = True,
                 node_command: Sequence[str] = (sys.executable, "-m", "meshnode.node")) -> None:
        self._http = http
        self._dir = data_dir / "sandboxes"
        self._actions = data_dir / "mesh-actions"
        self._targets = targets_dir
        self._namespaces = namespaces
        self._node_command = list(node_command)
        self._lock = asyncio.Lock()

    # -- state -----------------------------------------------------------------------------------
    def _state_file(self, sandbox_id: str) -> Path:
        return self._dir / sandbox_id / "state.json"

    def _load(self, sandbox_id: str) -> SandboxState | None:
        path = self._state_file(sandbox_id)
        return SandboxState.model_validate_json(path.read_text()) if path.exists() else None

    def _save(self, state: SandboxState) -> None:
        path = self._state_file(state.ref.sandbox_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(path)

    # -- provision -------------------------------------------------------------------------------
    async def provision(self, inp: ProvisionInput, progress: Callable[[str], None]) -> SandboxRef:
        if not inp.sandbox_id or "/" in inp.sandbox_id or inp.sandbox_id.startswith("."):
            raise InvalidInput(f"sandbox_id {inp.sandbox_id!r} is not a valid name (DNS-label safe, no '/')")
        try:
            behaviour(inp.workload.version, inp.workload.config)
        except InvalidInput as err:
            raise InvalidInput(f"sandbox {inp.sandbox_id}: workload: {err.message}") from err
        async with self._lock:
            existing = self._load(inp.sandbox_id)
            if existing is not None and existing.complete and await self._intact(existing):
                await self._revive(existing)
                return existing.ref
            if existing is not None:
                progress(f"removing the incomplete {inp.sandbox_id} first")
                await self.teardown(existing.ref)
            reason = netns.unavailable_reason() if self._namespaces else "namespaces disabled (sandbox_namespaces)"
            state: SandboxState | None = None
            if reason is None:
                try:
                    state = await self._provision_netns(inp, progress)
                except NetError as err:
                    progress(f"network namespaces failed, falling back to userspace: {err}")
                    await self.teardown(SandboxRef(backend=inp.backend, sandbox_id=inp.sandbox_id, arm=inp.arm,
                                                   nodes=[]))
                    reason = f"ip netns failed: {err}"
                except Exception:
                    await self.teardown(SandboxRef(backend=inp.backend, sandbox_id=inp.sandbox_id, arm=inp.arm,
                                                   nodes=[]))
                    raise
            if state is None:
                state = self._userspace_state(inp, f"userspace: {reason}; faults applied by the nodes themselves")
            try:
                self._save(state)
                for node in state.nodes:
                    self._start(state, node)
                self._save(state)
                progress(f"started {len(state.nodes)} node(s), waiting for them to answer")
                await self._wait_ready(state)
            except Exception:
                await self.teardown(state.ref)  # leave nothing half-started behind; a retry starts afresh
                raise
            self._write_targets(state)
            state.complete = True
            self._save(state)
            progress(f"sandbox {inp.sandbox_id} ready ({state.ref.chaos_mode})")
            return state.ref

    async def _provision_netns(self, inp: ProvisionInput, progress: Callable[[str], None]) -> SandboxState:
        async with netns.subnet_lock():
            subnet = self._free_subnet(await netns.used_subnets())
            state = SandboxState(ref=SandboxRef(backend=inp.backend, sandbox_id=inp.sandbox_id, arm=inp.arm,
                                                nodes=[]), mode="netns", subnet=subnet, nodes=[])
            self._save(state)  # before the first link exists: teardown finds it even after a crash here
            await netns.create_bridge(inp.sandbox_id, subnet)
        for i in range(inp.workload.nodes):
            await netns.create_node_netns(inp.sandbox_id, subnet, i)
            ip = netns.node_ip(subnet, i)
            state.nodes.append(NodeState(
                index=i, id=f"{inp.sandbox_id}-n{i}", listen=f"{ip}:{MESH_PORT}", host=ip, metrics_port=METRICS_PORT,
                admin_port=ADMIN_PORT, netns=netns.netns_name(inp.sandbox_id, i), version=inp.workload.version,
                config=dict(inp.workload.config)))
            progress(f"namespace {i + 1}/{inp.workload.nodes} ready")
        first = state.nodes[0].netns
        assert first is not None
        state.netem = await netns.netem_available(first)
        state.nft = netns.nft_available()
        if state.nft:
            await local_faults.egress_rules(state, inp.egress_allow)
        how = ("netem for latency and loss" if state.netem else
               "no sch_netem in this kernel: latency applied by the nodes, "
               + ("loss and partitions by nftables" if state.nft else "loss and partitions by the nodes"))
        egress = "egress limited to peers + allow-list by nftables" if state.nft else "no nft: egress unrestricted " \
            "inside the subnet (no route leaves it)"
        state.ref = self._ref(inp, state, f"netns: {how}; {egress}")
        return state

    def _userspace_state(self, inp: ProvisionInput, chaos_mode: str) -> SandboxState:
        free = free_ports(3 * inp.workload.nodes)
        ports = [(free[3 * i], free[3 * i + 1], free[3 * i + 2]) for i in range(inp.workload.nodes)]
        nodes = [NodeState(index=i, id=f"{inp.sandbox_id}-n{i}", listen=f"127.0.0.1:{mesh}", host="127.0.0.1",
                           metrics_port=metrics, admin_port=admin, version=inp.workload.version,
                           config=dict(inp.workload.config))
                 for i, (mesh, metrics, admin) in enumerate(ports)]
        state = SandboxState(ref=SandboxRef(backend=inp.backend, sandbox_id=inp.sandbox_id, arm=inp.arm, nodes=[]),
                             mode="userspace", nodes=nodes)
        state.ref = self._ref(inp, state, chaos_mode)
        return state

    @staticmethod
    def _ref(inp: ProvisionInput, state: SandboxState, chaos_mode: str) -> SandboxRef:
        return SandboxRef(
            backend=inp.backend, sandbox_id=inp.sandbox_id, arm=inp.arm, chaos_mode=chaos_mode,
            labels={"sandbox": inp.sandbox_id, "arm": inp.arm.value},
            nodes=[NodeRef(id=n.id, address=n.listen, admin_url=f"http://{n.host}:{n.admin_port}",
                           metrics_url=f"http://{n.host}:{n.metrics_port}/metrics", version=n.version)
                   for n in state.nodes])

    def _free_subnet(self, used: set[int]) -> int:
        for path in self._dir.glob("*/state.json"):
            with contextlib.suppress(ValueError, OSError):
                subnet = SandboxState.model_validate_json(path.read_text()).subnet
                if subnet is not None:
                    used.add(subnet)
        for n in range(1, 255):
            if n not in used:
                return n
        raise PermanentError("all 254 sandbox subnets 10.213.x.0/24 are in use", type=SANDBOX_FAILED)

    # -- processes -------------------------------------------------------------------------------
    def _start(self, state: SandboxState, node: NodeState) -> None:
        peers = ",".join(n.listen for n in state.nodes)
        args = [*self._node_command, "--id", node.id, "--listen", node.listen, "--peers", peers,
                "--metrics-port", str(node.metrics_port), "--admin-port", str(node.admin_port),
                "--version", node.version, *[f"--config={k}={v}" for k, v in node.config.items()]]
        if node.netns is not None:
            args = ["ip", "netns", "exec", node.netns, *args]
        log = self._dir / state.ref.sandbox_id / f"{node.id}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        node.pid, node.killed = proc.pid, False

    async def _wait_ready(self, state: SandboxState, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for node in state.nodes:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await self._http.get(f"http://{node.host}:{node.admin_port}/status")).status_code == 200:
                        break
                if node.pid is not None and not alive(node.pid):
                    # Retryable: a retry tears the half-provisioned sandbox down and picks new ports.
                    log = self._dir / state.ref.sandbox_id / f"{node.id}.log"
                    tail = log.read_text(errors="replace")[-600:] if log.exists() else "(no log)"
                    raise RuntimeError(f"mesh node {node.id} exited at start; its log ends:\n{tail}")
                if loop.time() > deadline:
                    raise RuntimeError(f"mesh node {node.id} did not answer on {node.host}:{node.admin_port} "
                                       f"within {timeout:.0f}s")
                await asyncio.sleep(0.1)

    @staticmethod
    async def _intact(state: SandboxState) -> bool:
        """Its namespaces still exist (a host reboot removes them, not the state file)."""
        if state.mode != "netns":
            return True
        return len(await netns.list_netns(state.ref.sandbox_id)) == len(state.nodes)

    async def _revive(self, state: SandboxState) -> None:
        """A repeated provision (e.g. after a worker restart) restarts nodes that died without a kill fault."""
        dead = [n for n in state.nodes if not n.killed and (n.pid is None or not alive(n.pid))]
        for node in dead:
            self._start(state, node)
        if dead:
            self._save(state)
            await self._wait_ready(state)

    def _write_targets(self, state: SandboxState) -> None:
        self._targets.mkdir(parents=True, exist_ok=True)
        groups = [{"targets": [f"{n.host}:{n.metrics_port}"],
                   "labels": {**state.ref.labels, "node": n.id}} for n in state.nodes]
        tmp = self._targets / f".{state.ref.sandbox_id}.json.tmp"
        tmp.write_text(json.dumps(groups, indent=2))
        tmp.replace(self._targets / f"{state.ref.sandbox_id}.json")

    # -- faults ----------------------------------------------------------------------------------
    def _fault_nodes(self, state: SandboxState, inp: FaultInput) -> list[NodeState]:
        if not inp.fault.nodes:
            return list(state.nodes)
        bad = [i for i in inp.fault.nodes if not 0 <= i < len(state.nodes)]
        if bad:
            raise InvalidInput(f"fault {inp.fault_id}: node indexes {bad} are outside the sandbox's "
                               f"{len(state.nodes)} nodes (0-based)")
        return [state.nodes[i] for i in inp.fault.nodes]

    def _state_of(self, ref: SandboxRef) -> SandboxState:
        state = self._load(ref.sandbox_id)
        if state is None or not state.complete:
            raise InvalidInput(f"sandbox {ref.sandbox_id} is not provisioned on this worker ({self._dir})")
        return state

    async def apply_fault(self, inp: FaultInput) -> FaultApplied:
        return await self._fault(inp, apply=True)

    async def clear_fault(self, inp: FaultInput) -> FaultApplied:
        return await self._fault(inp, apply=False)

    async def _fault(self, inp: FaultInput, *, apply: bool) -> FaultApplied:
        state = self._state_of(inp.sandbox)
        nodes = self._fault_nodes(state, inp)
        kind = inp.fault.kind
        groups: list[list[NodeState]] = []
        if kind == FaultKind.PARTITION:
            chosen = {n.index for n in nodes}
            if len(chosen) == len(state.nodes):  # no nodes named: split the sandbox in two halves
                chosen = set(range(len(state.nodes) // 2 or 1))
            groups = [[n for n in state.nodes if n.index in chosen], [n for n in state.nodes if n.index not in chosen]]
            nodes = state.nodes
        if kind == FaultKind.NODE_KILL:
            for node in nodes:
                if apply and node.pid is not None and alive(node.pid):
                    kill(node.pid, signal.SIGKILL)
                    node.killed = True
                elif not apply and node.killed:
                    self._start(state, node)
            self._save(state)
            if not apply:
                await self._wait_ready(state)
            return FaultApplied(fault_id=inp.fault_id, nodes=[n.id for n in nodes], mode="signal",
                                note="SIGKILL" if apply else "restarted")
        mode = await local_faults.network_fault(self._http, state, nodes, groups, inp, apply)
        return FaultApplied(fault_id=inp.fault_id, nodes=[n.id for n in nodes], mode=mode,
                            note=state.ref.chaos_mode)

    # -- teardown --------------------------------------------------------------------------------
    async def teardown(self, ref: SandboxRef) -> TeardownResult:
        state = self._load(ref.sandbox_id)
        removed: list[str] = []
        target = self._targets / f"{ref.sandbox_id}.json"
        if target.exists():  # first: Prometheus stops scraping before the nodes go
            target.unlink()
            removed.append(f"prometheus targets {target}")
        for node in state.nodes if state else []:
            if node.pid is not None and alive(node.pid) and is_node(node.pid, node.id):
                kill(node.pid, signal.SIGKILL)
                removed.append(f"process {node.id} (pid {node.pid})")
        if netns.unavailable_reason() is None:
            removed += await netns.remove_all(ref.sandbox_id)
        if (self._dir / ref.sandbox_id).exists():
            shutil.rmtree(self._dir / ref.sandbox_id, ignore_errors=True)
            removed.append(f"state {self._dir / ref.sandbox_id}")
        return TeardownResult(sandbox_id=ref.sandbox_id, removed=removed)

    # -- mesh actions ----------------------------------------------------------------------------
    async def execute_mesh_action(self, inp: MeshActionInput) -> MeshActionResult:
        by_id = {n.id: n for n in inp.target.nodes}
        unknown = [i for i in inp.node_ids if i not in by_id]
        if unknown:
            raise InvalidInput(f"mesh action {inp.action_id}: nodes {unknown} are not in the target "
                               f"({', '.join(by_id) or 'no nodes'})")
        if inp.action == MeshAction.SET_VERSION and not inp.version:
            raise InvalidInput(f"mesh action {inp.action_id}: set_version needs a version")
        record = self._actions / f"{_safe(inp.action_id)}.json"
        previous: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
        for node_id in inp.node_ids:
            admin = by_id[node_id].admin_url
            status = (await self._http.get(f"{admin}/status")).raise_for_status().json()
            previous.setdefault(node_id, str(status["version"]))
            if inp.action == MeshAction.SET_CONFIG:
                answer = await self._http.post(f"{admin}/config", json=inp.config)
            else:  # set_version, or restart into the running build
                answer = await self._http.post(f"{admin}/version", json={"version": inp.version or status["version"]})
            if answer.status_code == 400:
                raise InvalidInput(f"mesh action {inp.action_id} on {node_id}: {answer.json().get('error')}")
            answer.raise_for_status()
            self._actions.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(previous))
            self._remember(node_id, inp)
        return MeshActionResult(action_id=inp.action_id, applied=list(inp.node_ids), previous=previous)

    def _remember(self, node_id: str, inp: MeshActionInput) -> None:
        """Keep the node's version/config in its sandbox state, so a restart after a kill runs the same build."""
        sandbox_id = node_id.rsplit("-n", 1)[0]
        state = self._load(sandbox_id)
        for node in state.nodes if state else []:
            if node.id == node_id and state is not None:
                if inp.action == MeshAction.SET_VERSION and inp.version:
                    node.version = inp.version
                node.config.update(inp.config if inp.action == MeshAction.SET_CONFIG else {})
                for ref in state.ref.nodes:
                    if ref.id == node_id:
                        ref.version = node.version
                self._save(state)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


