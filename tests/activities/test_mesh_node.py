"""The mesh-node program: real nodes relaying real UDP traffic, measured in their own Prometheus metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from workers.stack import processes


@dataclass
class Node:
    id: str
    listen: str
    metrics: str
    admin: str
    proc: subprocess.Popen[bytes]


Cluster = Callable[[int, str], list[Node]]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Starts groups of nodes (``python -m meshnode.node``) on 127.0.0.1; stops them after the test."""
    started: list[Node] = []

    def start(count: int, version: str) -> list[Node]:
        ports = [(processes.free_port(), processes.free_port(), processes.free_port()) for _ in range(count)]
        peers = ",".join(f"127.0.0.1:{mesh}" for mesh, _, _ in ports)
        nodes = []
        for i, (mesh, metrics, admin) in enumerate(ports):
            node_id = f"{version}-n{i}"
            proc = processes.spawn([sys.executable, "-m", "meshnode.node", "--id", node_id,
                                    "--listen", f"127.0.0.1:{mesh}", "--peers", peers, "--metrics-port", str(metrics),
                                    "--admin-port", str(admin), "--version", version], tmp_path / f"{node_id}.log")
            nodes.append(Node(node_id, f"127.0.0.1:{mesh}", f"http://127.0.0.1:{metrics}/metrics",
                              f"http://127.0.0.1:{admin}", proc))
        for node, (_, _, admin) in zip(nodes, ports, strict=True):
            processes.wait_for_port(node.proc, admin, node.id, tmp_path / f"{node.id}.log", timeout=15)
        started.extend(nodes)
        return nodes

    try:
        yield start
    finally:
        for node in started:
            processes.stop(node.proc, timeout=2)


async def totals(http: httpx.AsyncClient, nodes: list[Node]) -> dict[str, float]:
    """Each mesh metric summed over ``nodes`` (histograms as _sum and _count)."""
    out: dict[str, float] = {}
    for node in nodes:
        text = (await http.get(node.metrics)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("mesh_") and not sample.name.endswith("_created") and not sample.labels:
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def test_nodes_relay_real_traffic_and_count_it(cluster: Cluster) -> None:
    nodes = cluster(3, "1.4.0")
    await asyncio.sleep(2.0)
    async with httpx.AsyncClient(timeout=5) as http:
        m = await totals(http, nodes)
        status = (await http.get(f"{nodes[0].admin}/status")).json()
    assert m["mesh_messages_sent_total"] >= 20  # 3 nodes x ~10 probes/s x 2 s
    assert m["mesh_messages_relayed_total"] >= 15  # every probe goes through another node
    assert m["mesh_messages_delivered_total"] >= 0.9 * (m["mesh_messages_sent_total"] - 3)
    assert m["mesh_message_latency_seconds_count"] == m["mesh_messages_delivered_total"]
    assert m["mesh_relay_errors_total"] == 0
    assert status["id"] == "1.4.0-n0" and status["version"] == "1.4.0" and status["uptime_s"] > 1
    assert sorted(status["peers"]) == sorted(n.listen for n in nodes[1:])


async def test_faulty_version_is_measurably_worse(cluster: Cluster) -> None:
    good, bad = cluster(3, "1.4.0"), cluster(3, "1.5.0-rc1")
    await asyncio.sleep(4.0)
    async with httpx.AsyncClient(timeout=5) as http:
        g, b = await totals(http, good), await totals(http, bad)
    good_latency = g["mesh_message_latency_seconds_sum"] / g["mesh_message_latency_seconds_count"]
    bad_latency = b["mesh_message_latency_seconds_sum"] / b["mesh_message_latency_seconds_count"]
    assert bad_latency > good_latency + 0.030, (good_latency, bad_latency)  # the rc adds 40 ms per relay
    assert b["mesh_relay_errors_total"] > 0  # ~8 % of ~100 relayed messages dropped
    assert g["mesh_relay_errors_total"] == 0
    good_ratio = g["mesh_messages_delivered_total"] / g["mesh_messages_sent_total"]
    bad_ratio = b["mesh_messages_delivered_total"] / b["mesh_messages_sent_total"]
    assert bad_ratio < good_ratio


async def test_admin_api_switches_version_and_config_live(cluster: Cluster) -> None:
    nodes = cluster(2, "1.4.0")
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.post(f"{nodes[0].admin}/version", json={"version": "1.5.0-rc1"})
        assert answer.json() == {"previous": "1.4.0", "version": "1.5.0-rc1"}
        status = (await http.get(f"{nodes[0].admin}/status")).json()
        assert status["behaviour"]["relay_delay_ms"] == 40.0 and status["behaviour"]["drop_rate"] == 0.08
        text = (await http.get(nodes[0].metrics)).text
        assert 'mesh_node_info{node_id="1.4.0-n0",version="1.5.0-rc1"} 1.0' in text
        assert (await http.post(f"{nodes[0].admin}/config", json={"relay_delay_ms": "5"})).status_code == 200
        assert (await http.get(f"{nodes[0].admin}/status")).json()["behaviour"]["relay_delay_ms"] == 5.0
        refused = await http.post(f"{nodes[0].admin}/config", json={"relay_speed": "9"})
        assert refused.status_code == 400 and "relay_speed" in refused.json()["error"]
        refused = await http.post(f"{nodes[0].admin}/config", json={"drop_rate": "lots"})
        assert refused.status_code == 400 and "drop_rate" in refused.json()["error"]


async def test_userspace_partition_stops_delivery_and_clears(cluster: Cluster) -> None:
    a, b = cluster(2, "1.4.0")  # two nodes: each probe goes a -> b -> b -> a
    async with httpx.AsyncClient(timeout=5) as http:
        await http.post(f"{a.admin}/fault", json={"id": "p1", "partition": [b.listen]})
        await asyncio.sleep(0.3)
        before = (await totals(http, [a]))["mesh_messages_delivered_total"]
        await asyncio.sleep(1.0)
        during = (await totals(http, [a]))["mesh_messages_delivered_total"]
        assert during == before
        await http.delete(f"{a.admin}/fault/p1")
        await asyncio.sleep(1.0)
        after = (await totals(http, [a]))["mesh_messages_delivered_total"]
        assert after > during + 5
