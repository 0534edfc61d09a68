"""Network namespaces, veth pairs, a bridge, netem and nftables for the local sandbox (root only).

Every command runs through ``ip``, ``tc`` or ``nft``; a failure raises ``NetError`` with the command and its
stderr. Addresses come from a private /24 that exists only on the bridge and in the namespaces created here:
there is no default route and no NAT, so nothing in a sandbox can reach beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from westworld.errors import NetError

SUBNET_PREFIX = "10.213"
NODE_HOST_OFFSET = 10  # node i is 10.213.<n>.<10 + i>; the bridge is .1
LOCK_FILE = Path("/run/lock/westworld-sandbox-subnets.lock")


async def run(*args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise NetError(f"`{' '.join(args)}` failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


async def run_input(args: list[str], text: str) -> None:
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(text.encode())
    if proc.returncode != 0:
        raise NetError(f"`{' '.join(args)}` failed ({proc.returncode}): {err.decode().strip()}\n{text}")


def short_id(sandbox_id: str) -> str:
    """Six hex characters naming a sandbox's links and namespaces (interface names are at most 15 bytes)."""
    return hashlib.sha256(sandbox_id.encode()).hexdigest()[:6]


def netns_name(sandbox_id: str, index: int) -> str:
    return f"ww-{short_id(sandbox_id)}-{index}"


def bridge_name(sandbox_id: str) -> str:
    return f"wwb{short_id(sandbox_id)}"


def veth_name(sandbox_id: str, index: int) -> str:
    return f"wwv{short_id(sandbox_id)}n{index}"


def node_ip(subnet: int, index: int) -> str:
    return f"{SUBNET_PREFIX}.{subnet}.{NODE_HOST_OFFSET + index}"


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they can be tried."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


@contextlib.asynccontextmanager
async def subnet_lock() -> AsyncIterator[None]:
    """Machine-wide: choosing a free /24 and putting it on a bridge is one step for every process of this host
    (workers and test runs with different data dirs read the host's addresses, not each other's state)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:  # noqa: ASYNC230 - an empty lock file: opening it does not block
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def used_subnets() -> set[int]:
    """Third octets of 10.213.x.0/24 already on a link of this host."""
    out = await run("ip", "-o", "-4", "addr", "show")
    used = set()
    for word in out.split():
        if word.startswith(SUBNET_PREFIX + "."):
            used.add(int(word.split(".")[2]))
    return used


async def guard_private_range() -> None:
    """Make 10.213.0.0/16 unreachable from the host except through a sandbox's bridge (its /24 is more specific):
    a scrape or admin call racing a teardown then fails here instead of leaving through the default route."""
    await run("ip", "route", "replace", "unreachable", f"{SUBNET_PREFIX}.0.0/16")


async def create_bridge(sandbox_id: str, subnet: int) -> None:
    await guard_private_range()
    br = bridge_name(sandbox_id)
    await run("ip", "link", "add", br, "type", "bridge")
    await run("ip", "addr", "add", f"{SUBNET_PREFIX}.{subnet}.1/24", "dev", br)
    await run("ip", "link", "set", br, "up")


async def create_node_netns(sandbox_id: str, subnet: int, index: int) -> None:
    """A namespace with ``eth0`` (one end of a veth pair whose other end is on the bridge) and ``lo`` up."""
    ns, host_end = netns_name(sandbox_id, index), veth_name(sandbox_id, index)
    await run("ip", "netns", "add", ns)
    await run("ip", "link", "add", host_end, "type", "veth", "peer", "name", f"{host_end}p")
    await run("ip", "link", "set", f"{host_end}p", "netns", ns)
    await run("ip", "-n", ns, "link", "set", f"{host_end}p", "name", "eth0")
    await run("ip", "-n", ns, "addr", "add", f"{node_ip(subnet, index)}/24", "dev", "eth0")
    await run("ip", "-n", ns, "link", "set", "eth0", "up")
    await run("ip", "-n", ns, "link", "set", "lo", "up")
    await run("ip", "link", "set", host_end, "master", bridge_name(sandbox_id))
    await run("ip", "link", "set", host_end, "up")


async def list_netns(sandbox_id: str) -> list[str]:
    prefix = f"ww-{short_id(sandbox_id)}-"
    out = await run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


async def remove_all(sandbox_id: str) -> list[str]:
    """Delete the sandbox's namespaces (their veths go with them) and bridge; what was removed."""
    removed = []
    for ns in await list_netns(sandbox_id):
        await run("ip", "netns", "del", ns, check=False)
        removed.append(f"netns {ns}")
    br = bridge_name(sandbox_id)
    if "does not exist" not in await _stderr("ip", "link", "show", br):
        await run("ip", "link", "del", br, check=False)
        removed.append(f"bridge {br}")
    return removed


async def _stderr(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return err.decode() if proc.returncode else ""


async def netem_available(ns: str) -> bool:
    """Whether this kernel has ``sch_netem`` (probed on the namespace's ``eth0``)."""
    try:
        await run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "0ms")
    except NetError:
        return False
    await run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    return True


def nft_available() -> bool:
    return shutil.which("nft") is not None


async def set_netem(ns: str, delay_ms: int, jitter_ms: int, loss_pct: float) -> None:
    args = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem"]
    if delay_ms or jitter_ms:
        args += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
    if loss_pct:
        args += ["loss", f"{loss_pct}%"]
    await run(*args)


async def clear_netem(ns: str) -> None:
    await run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)


def _table(tag: str) -> str:
    return "ww" + hashlib.sha256(tag.encode()).hexdigest()[:10]


async def nft_apply(ns: str, tag: str, rules: list[tuple[str, str]]) -> None:
    """Replace the nftables table of ``tag`` in ``ns`` with (hook, rule) pairs; hooks are input/output."""
    table = _table(tag)
    await nft_delete(ns, tag)
    lines = [f"table inet {table} {{"]
    for hook in ("input", "output"):
        lines.append(f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;")
        lines += [f"    {rule}" for h, rule in rules if h == hook]
        lines.append("  }")
    lines.append("}")
    await run_input(["ip", "netns", "exec", ns, "nft", "-f", "-"], "\n".join(lines) + "\n")


async def nft_delete(ns: str, tag: str) -> None:
    await run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", _table(tag), check=False)
