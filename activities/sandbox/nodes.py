"""State and processes of the local sandbox's mesh nodes: the recorded state, free ports, start/stop by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

from pydantic import BaseModel, Field

from westworld.sandbox import SandboxRef

MESH_PORT, METRICS_PORT, ADMIN_PORT = 7000, 9100, 9101


class NodeState(BaseModel):
    index: int
    id: str
    listen: str
    host: str
    metrics_port: int
    admin_port: int
    netns: str | None = None
    pid: int | None = None
    version: str
    config: dict[str, str] = Field(default_factory=dict)
    killed: bool = False


class SandboxState(BaseModel):
    ref: SandboxRef
    mode: str  # "netns" | "userspace"
    subnet: int | None = None
    netem: bool = False
    nft: bool = False
    nodes: list[NodeState]
    complete: bool = False


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, free for both TCP and UDP (all held open until every one is chosen)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket()
            held.append(tcp)
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            with contextlib.suppress(OSError):
                udp.bind(("127.0.0.1", port))
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own dead children
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def is_node(pid: int, node_id: str) -> bool:
    """The pid still runs that mesh node (not a recycled pid)."""
    try:
        return node_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
