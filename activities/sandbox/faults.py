"""How the local sandbox applies chaos: in the kernel (netem, nftables in the node's namespace) or by the node
itself (its admin API), and how it limits a namespaced node's egress."""

from __future__ import annotations

from typing import Any

import httpx

from activities.sandbox import netns
from activities.sandbox.nodes import MESH_PORT, NodeState, SandboxState
from westworld.errors import InvalidInput, NetError
from westworld.sandbox import FaultInput, FaultKind


async def egress_rules(state: SandboxState, allow: list[str]) -> None:
    """Each namespace may send only to loopback, its peers and ``allow`` (CIDR or host:port), plus replies."""
    peers = ", ".join(n.host for n in state.nodes)
    rules = [("output", 'oifname "lo" accept'), ("output", "ct state established,related accept"),
             ("output", f"ip daddr {{ {peers} }} accept")]
    for entry in allow:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if port:
            rules += [("output", f"ip daddr {host} tcp dport {port} accept"),
                      ("output", f"ip daddr {host} udp dport {port} accept")]
        else:
            rules.append(("output", f"ip daddr {entry} accept"))
    rules.append(("output", "drop"))
    for node in state.nodes:
        assert node.netns is not None
        try:
            await netns.nft_apply(node.netns, "egress", rules)
        except NetError as err:
            raise InvalidInput(f"egress_allow {allow} could not be enforced: {err}") from err


def kernel_way(state: SandboxState, kind: FaultKind) -> str | None:
    """``netem`` or ``nftables`` if the kernel applies this fault in this sandbox, else None (the node does)."""
    if state.mode != "netns":
        return None
    if kind in (FaultKind.LATENCY, FaultKind.PACKET_LOSS) and state.netem:
        return "netem"
    if kind in (FaultKind.PACKET_LOSS, FaultKind.PARTITION) and state.nft:
        return "nftables"
    return None


async def network_fault(http: httpx.AsyncClient, state: SandboxState, nodes: list[NodeState],
                        groups: list[list[NodeState]], inp: FaultInput, apply: bool) -> str:
    """Apply (or clear) a latency, loss or partition fault on ``nodes``; returns how it was applied.

    A partition's ``groups`` are the two sides; each node drops mesh traffic to and from the other side."""
    way = kernel_way(state, inp.fault.kind)
    for node in nodes:
        others = [o for g in groups if node not in g for o in g]
        if way == "nftables" and inp.fault.kind == FaultKind.PARTITION:
            await _nft_partition(node, inp.fault_id, [o.host for o in others], apply)
        elif way == "nftables":
            await _nft_loss(node, inp, apply)
        elif way == "netem":
            await _netem(node, inp, apply)
        else:
            body: dict[str, Any] = {"partition": [o.listen for o in others]}
            if inp.fault.kind != FaultKind.PARTITION:
                body.update(delay_ms=inp.fault.latency_ms, jitter_ms=inp.fault.jitter_ms, loss_pct=inp.fault.loss_pct)
            await userspace_fault(http, node, inp.fault_id, apply, body)
    return way or "userspace"


def _ns(node: NodeState) -> str:
    if node.netns is None:
        raise RuntimeError(f"node {node.id} has no network namespace")
    return node.netns


async def _nft_partition(node: NodeState, fault_id: str, others: list[str], apply: bool) -> None:
    if not apply or not others:
        await netns.nft_delete(_ns(node), fault_id)
        return
    addrs = ", ".join(others)
    await netns.nft_apply(_ns(node), fault_id, [
        ("output", f"ip daddr {{ {addrs} }} udp dport {MESH_PORT} drop"),
        ("input", f"ip saddr {{ {addrs} }} udp dport {MESH_PORT} drop"),
    ])


async def _nft_loss(node: NodeState, inp: FaultInput, apply: bool) -> None:
    """Loss without netem: a random drop of the node's outgoing mesh packets."""
    if not apply:
        await netns.nft_delete(_ns(node), inp.fault_id)
        return
    per_10k = round(inp.fault.loss_pct * 100)
    await netns.nft_apply(_ns(node), inp.fault_id, [
        ("output", f"udp dport {MESH_PORT} numgen random mod 10000 < {per_10k} drop"),
    ])


async def _netem(node: NodeState, inp: FaultInput, apply: bool) -> None:
    """netem on the node's eth0 (one qdisc per node: a second netem fault on the same node replaces the first)."""
    if apply:
        fault = inp.fault
        await netns.set_netem(_ns(node), fault.latency_ms, fault.jitter_ms, fault.loss_pct)
    else:
        await netns.clear_netem(_ns(node))


async def userspace_fault(http: httpx.AsyncClient, node: NodeState, fault_id: str, apply: bool,
                          body: dict[str, Any]) -> None:
    """Through the node's admin API: ``POST /fault`` (keyed by fault id) or ``DELETE /fault/<id>``."""
    base = f"http://{node.host}:{node.admin_port}/fault"
    if apply:
        answer = await http.post(base, json={"id": fault_id, **body})
    else:
        answer = await http.delete(f"{base}/{fault_id}")
    answer.raise_for_status()
