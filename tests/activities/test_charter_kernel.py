"""The charter's eBPF filter against the real kernel: two network namespaces joined by a veth pair, the filter on
the sender's egress, datagrams sent for real; what arrives on the other side and the kernel's counters are read.

Skipped (with the reason) where the kernel path cannot run: not root, no bcc, no headers, a verifier that refuses.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.charter_kernel import KernelFilter
from tests.fixtures.netns_socket import socket_in
from westworld.charter import name_hash
from westworld.errors import KernelEnforcementUnavailable

PORT = 8125
ALLOWED = ("mesh_link_quality", "mesh_node_uptime_seconds", "mesh:recorded_rate")


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("kernel enforcement test needs root (network namespaces and eBPF)")
    tag = f"{os.getpid() % 100000}"
    a, b = f"wwca{tag}", f"wwcb{tag}"
    _sh("ip", "netns", "add", a)
    _sh("ip", "netns", "add", b)
    try:
        _sh("ip", "link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        _sh("ip", "link", "set", f"va{tag}", "netns", a)
        _sh("ip", "link", "set", f"vb{tag}", "netns", b)
        _sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", f"va{tag}")
        _sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", f"vb{tag}")
        for ns, dev in ((a, f"va{tag}"), (b, f"vb{tag}")):
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False)
        subprocess.run(["ip", "netns", "del", b], check=False)


@pytest.fixture
def kernel_filter(veth: tuple[str, str], tmp_path: Path) -> Iterator[KernelFilter]:
    a, _ = veth
    device = f"va{os.getpid() % 100000}"
    try:
        kf = KernelFilter.attach(ALLOWED, device=device, port=PORT, netns=a)
    except KernelEnforcementUnavailable as err:
        pytest.skip(f"the kernel cannot run the charter filter here: {err.message}")
    with kf:
        yield kf


def exchange(veth: tuple[str, str], datagrams: list[bytes], port: int = PORT) -> list[bytes]:
    """Send each datagram from the first namespace; what arrived in the second, in order."""
    a, b = veth
    rx, tx = socket_in(b, ("10.77.0.2", port)), socket_in(a)
    rx.settimeout(0.3)
    got: list[bytes] = []
    try:
        for d in [*datagrams, b"end:1|g"]:  # a marker that passes when the port is not filtered
            tx.sendto(d, ("10.77.0.2", port))
        while True:
            try:
                got.append(rx.recv(65535))
            except TimeoutError:
                break
    finally:
        rx.close()
        tx.close()
    return got


def test_only_whitelisted_names_leave_the_node(kernel_filter: KernelFilter, veth: tuple[str, str]) -> None:
    kernel_filter.set_names([*ALLOWED, "end"])
    good = [b"mesh_link_quality:0.93|g|#node:n1,peer:n2", b"mesh_node_uptime_seconds:12|g\n",
            b"mesh:recorded_rate:1.5|g", b"mesh_link_quality:1|g\nmesh_node_uptime_seconds:3|g|#node:n1\n"]
    bad = [
        b"user_location:48.85|g|#user:0xabc",  # not whitelisted
        b"Mesh_link_quality:0.9|g",  # upper case is refused, not lowered
        "mesh_link_quаlity:0.9|g".encode(),  # a Cyrillic a (U+0430)
        b"mesh_link_quality:0.9|g\nuser_location:1|g",  # one forbidden line drops the datagram
        b"mesh_link_quality 0.9",  # no ':' nor '|'
        b"mesh_link_quality:0.9|g\ntrailing_line_without_bar",
        b"mesh_link_quality:" + b"9" * 1100 + b"|g",  # oversized
        b"|g",
    ]
    got = exchange(veth, good + bad)
    assert got == [*good, b"end:1|g"]
    drops = kernel_filter.drops()
    assert drops.get(name_hash("user_location")) == 2
    stats = kernel_filter.stats()
    assert stats.not_allowed == 2
    assert stats.oversized == 1
    assert stats.malformed == 5
    assert stats.passed == len(good) + 1
    assert stats.lines == 6


def test_other_ports_are_untouched(kernel_filter: KernelFilter, veth: tuple[str, str]) -> None:
    assert exchange(veth, [b"user_location:1|g"], port=PORT + 1) == [b"user_location:1|g", b"end:1|g"]
    assert kernel_filter.drops() == {}


def test_a_charter_change_updates_the_map(kernel_filter: KernelFilter, veth: tuple[str, str]) -> None:
    kernel_filter.set_names(["mesh_node_uptime_seconds", "end"])
    got = exchange(veth, [b"mesh_link_quality:0.5|g", b"mesh_node_uptime_seconds:1|g"])
    assert got == [b"mesh_node_uptime_seconds:1|g", b"end:1|g"]
    assert kernel_filter.drops() == {name_hash("mesh_link_quality"): 1}


def test_detaching_lets_traffic_through_again(kernel_filter: KernelFilter, veth: tuple[str, str]) -> None:
    assert exchange(veth, [b"user_location:1|g"]) == []  # "end" is not whitelisted here: both dropped
    kernel_filter.close()
    assert exchange(veth, [b"user_location:1|g"]) == [b"user_location:1|g", b"end:1|g"]
