"""Charter benchmark: `./dev bench charter` (= python -m tests.bench.charter [--seconds S] [--rounds R]
[--gate-datagrams N] [--records N] [--exports N] [--reports N] [--skip kernel|gate|rights]). Every figure is a
ratio to a floor measured in the same run on the same machine (these machines are shared and noisy: absolute rates
are printed for context only, never asserted). SIGTERM/SIGHUP stop it cleanly: the namespaces (with their veth and
tc filters), the sender, Temporal and anvil go with it (tests/bench/lifecycle.py).

1. Kernel filter (``bpf/charter_egress.c`` at TC egress): two network namespaces joined by a veth pair (as
   tests/activities/test_charter_kernel.py builds them); a small C sender (tests/bench/charter_sender.c, compiled
   with gcc at bench time; sendmmsg, batches of 64) pinned to one core with taskset sends telemetry datagrams from
   the first namespace for a fixed time. Figure: datagrams per CPU-second of the sender with the charter program
   attached ÷ with the ``pass_through`` program at the same attachment (same device, hook and tc preference), for
   a mix of allowed and forbidden datagrams and for allowed names only (the parse cost without the drop's saving).
   The sender's CPU time (CLOCK_PROCESS_CPUTIME_ID) holds the send, the TC program, the veth and the receiving
   stack, which runs in the sender's softirq on the same core (what ksoftirqd ran instead is printed); per
   wall-second is printed too, but on a shared core it mostly measures the CPU share the sender was given. A
   datagram the filter drops also saves the rest of the path, so the mix can beat the floor. Rounds alternate the
   variants; medians and the per-round ratios are printed. The filter's own counters are checked against what was
   sent, so the figure is known to come from the program being on the path. Without root, bcc, headers or gcc, or
   when the verifier refuses the program, this part prints why and is not measured.
2. Userspace gate (``workers.gate.server``: the gate process's asyncio datagram endpoint and its
   ``GateState.receive``, charter deploy/charter.yaml in force, one consent granted): datagrams/s ÷ a bare UDP
   receive loop (blocking ``recvfrom``), same socket options (the same forced SO_RCVBUF); also ÷ an asyncio
   endpoint whose protocol only counts (how much is the judging itself). Each receiver's socket is filled with the
   same N datagrams first (nothing reads meanwhile, none may be lost: checked in /proc/net/udp), then timed while
   it drains them, so the sender's speed and the other core's load are not in the figure.
3. Data export end to end for a user with 10,000 records (audit entries naming them, shelter requests among them)
   on a real Temporal dev server, anvil (the deployed Charter is the EIP-712 domain) and SQLite: caller-observed
   start-to-result time ÷ a workflow with one no-op activity on the same server, and ÷ the export activity's own
   work (gather, bundle, seal, write) called directly. Violation-report intake: p50/p99 of the submit update as the
   reporter's client sees it (one after another, each opening a case) ÷ a no-op update on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from asyncio.trsock import TransportSocket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.chain_tx import load_deployment
from activities.charter_chain import DEFAULT_CHARTER_FILE
from activities.charter_kernel import KernelFilter
from activities.charter_rights import CharterRights, open_bundle
from activities.sql.audit_log import AuditLog
from activities.sql.charter_store import CharterStore
from tests.bench.activity_floor import ActivityFloorWorkflow, FloorInput, bench_noop
from tests.bench.lifecycle import stop_on_signals
from tests.bench.noop import NoopUpdateWorkflow
from tests.bench.voters import BenchVoters, make_voters
from tests.fixtures.netns_socket import socket_in
from tests.workflows.charter_rights_support import POW_BITS, Committee, make_committee, make_report, write_charter
from westworld import keys
from westworld.chain import CHARTER, Deployment
from westworld.charter import Whitelist, charter_hash, load_charter
from westworld.charter_cases import solve_pow
from westworld.charter_consent import ConsentContext
from westworld.charter_data import BuildExportInput, ExportDelivery, ExportInput, ExportResult, read_bundle
from westworld.charter_rights import ExportRequest, sign_export
from westworld.errors import KernelEnforcementUnavailable
from westworld.keys import SEARCH_ATTRIBUTES
from workers.cli.charter_rights import REPORTER_IDENTITY, submit_report
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.gate.server import GateState, start
from workers.settings import Settings
from workers.stack import processes
from workers.worker import Resources, build_worker, open_resources
from workflows.data_export import DataExportWorkflow

PORT = 8125
SENDER_SOURCE = Path(__file__).resolve().parent / "charter_sender.c"
CONSENTED = "0x" + "c0" * 20  # the subject whose consent to mesh_user_session_seconds is in force
PEER_MAC = "02:77:77:00:00:02"
SO_RCVBUFFORCE = 33
RCVBUF = 256 << 20  # forced (root): the gate's socket holds the whole prefill; the kernel doubles it


# -- the datagrams -------------------------------------------------------------------------------------------


def allowed_datagrams() -> list[bytes]:
    """Datagrams whose names the kernel filter lets through: every name in the charter, node/peer/user identifiers
    to pseudonymise, single lines and a batch of four; and two the gate still judges (labels it strips, a
    consent-only metric for a subject without consent)."""
    out: list[bytes] = []
    for i in range(8):
        node, peer = f"n{i}", f"n{(i * 7 + 3) % 16}"
        out += [
            f"mesh_link_quality:0.{90 + i}|g|#node:{node},peer:{peer}".encode(),
            f"mesh_packet_loss_ratio:0.0{i}|g|#node:{node},peer:{peer}\n".encode(),
            f"mesh_throughput_bytes:{1000 * (i + 1)}|c|#node:{node},direction:tx".encode(),
            f"mesh_node_uptime_seconds:{3600 + i}|g|#node:{node},version:1.4.{i}".encode(),
            (f"mesh_link_quality:0.8|g|#node:{node},peer:{peer}\nmesh_latency_p99_seconds:0.0{i + 1}|g|#node:{node}\n"
             f"mesh_throughput_bytes:{500 + i}|c|#node:{node},direction:rx\n"
             f"mesh_node_uptime_seconds:{7200 + i}|g|#node:{node},version:1.4.{i}\n").encode(),
            f"mesh_user_session_seconds:{300 + i}|g|#node:{node},user:{CONSENTED}".encode(),
            # names the kernel lets through and the gate judges further: a label to strip, a missing consent
            f"mesh_packet_loss_ratio:0.1|g|#node:{node},peer:{peer},email:a.b,ip_addr:10.0.0.{i}".encode(),
            f"mesh_user_session_seconds:{60 + i}|g|#node:{node},user:0x{i + 1:040x}".encode(),
        ]
    return out


def forbidden_datagrams() -> list[bytes]:
    """Datagrams the kernel filter drops: names outside the charter or blocked, one forbidden line in a batch,
    look-alikes (upper case, a Cyrillic letter), malformed lines."""
    out: list[bytes] = []
    for i in range(8):
        out += [
            f"user_location:48.8{i}|g|#user:0x{i:040x}".encode(),
            f"user_email_address:{i}|g|#node:n{i}".encode(),
            f"mesh_link_quality:0.9|g|#node:n{i},peer:n1\nuser_location:{i}|g\n".encode(),
            f"Mesh_link_quality:0.{i}|g|#node:n{i}".encode(),
            f"mesh_link_qu\u0430lity:0.{i}|g|#node:n{i}".encode(),
            f"mesh_link_quality {i}".encode(),
            f"mesh_gps_latitude:48.{i}|g|#node:n{i}".encode(),
            f"browsing_history_url_count:{i}|c|#node:n{i}".encode(),
        ]
    return out


def mix() -> list[bytes]:
    """Allowed and forbidden datagrams interleaved, half and half."""
    good, bad = allowed_datagrams(), forbidden_datagrams()
    return [d for pair in zip(good, bad, strict=True) for d in pair]


def write_datagrams(path: Path, datagrams: list[bytes]) -> Path:
    path.write_bytes(b"".join(len(d).to_bytes(2, "big") + d for d in datagrams))
    return path


# -- 1. the kernel filter ------------------------------------------------------------------------------------


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass(frozen=True)
class Namespaces:
    sender: str
    receiver: str
    device: str  # the sender's end of the veth pair, where the filter is attached
    src: str = "10.78.0.1"
    dst: str = "10.78.0.2"


@contextlib.contextmanager
def veth_pair() -> Iterator[Namespaces]:
    """Two namespaces joined by a veth pair; deleted on the way out (their devices and tc filters with them)."""
    tag = f"{os.getpid() % 100000}"
    ns = Namespaces(f"wwbench{tag}a", f"wwbench{tag}b", f"vbena{tag}")
    try:
        _sh("ip", "netns", "add", ns.sender)
        _sh("ip", "netns", "add", ns.receiver)
        _sh("ip", "link", "add", ns.device, "type", "veth", "peer", "name", f"vbenb{tag}", "address", PEER_MAC)
        _sh("ip", "link", "set", ns.device, "netns", ns.sender)
        _sh("ip", "link", "set", f"vbenb{tag}", "netns", ns.receiver)
        _sh("ip", "-n", ns.sender, "addr", "add", f"{ns.src}/24", "dev", ns.device)
        _sh("ip", "-n", ns.receiver, "addr", "add", f"{ns.dst}/24", "dev", f"vbenb{tag}")
        for name, dev in ((ns.sender, ns.device), (ns.receiver, f"vbenb{tag}")):
            _sh("ip", "-n", name, "link", "set", dev, "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        # A permanent neighbour entry: no datagram waits for (or is lost to) ARP before it reaches the filter.
        _sh("ip", "-n", ns.sender, "neigh", "replace", ns.dst, "lladdr", PEER_MAC, "dev", ns.device, "nud", "permanent")
        yield ns
    finally:
        for name in (ns.sender, ns.receiver):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@dataclass(frozen=True)
class Sent:
    datagrams: int  # in the timed window
    seconds: float
    cpu_seconds: float
    total: int  # warm-up included: what the filter saw

    @property
    def rate(self) -> float:
        return self.datagrams / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.datagrams / max(self.cpu_seconds, 1e-9)


def compile_sender(workdir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed (apt-get install -y gcc): the C traffic generator cannot be built")
    binary = workdir / "charter_sender"
    built = subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(SENDER_SOURCE)], capture_output=True,
                           text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"gcc could not build {SENDER_SOURCE.name}: {built.stderr.strip()}")
    return binary


def send(ns: Namespaces, core: int, command: list[str], seconds: float) -> Sent:
    """Run a sender in the sender namespace pinned to ``core``; its one-line report."""
    done = subprocess.run(["ip", "netns", "exec", ns.sender, "taskset", "-c", str(core), *command],
                          capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the sender failed ({done.returncode}): {done.stderr.strip()}")
    sent, wall_ns, cpu_ns, _errors, total = (int(x) for x in done.stdout.split())
    return Sent(sent, wall_ns / 1e9, cpu_ns / 1e9, total)


PYTHON_SENDER = """
import socket, sys, time
dst, port, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
raw, grams = open(path, "rb").read(), []
while raw:
    n = int.from_bytes(raw[:2], "big"); grams.append(raw[2:2 + n]); raw = raw[2 + n:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((dst, port))
sent, k, start, c0 = 0, len(grams), time.monotonic(), time.process_time()
stop = start + seconds
while time.monotonic() < stop:
    for d in grams:
        s.send(d)
    sent += k
print(sent, int((time.monotonic() - start) * 1e9), int((time.process_time() - c0) * 1e9), 0, sent)
"""


def ksoftirqd_ns(core: int) -> int:
    """CPU time (ns) ksoftirqd/``core`` has run: softirq work deferred there is not in the sender's CPU time."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == f"ksoftirqd/{core}":
                return int((comm.parent / "schedstat").read_text().split()[0])
    return 0


def attach(names: tuple[str, ...], ns: Namespaces, program: str) -> KernelFilter:
    return KernelFilter.attach(names, device=ns.device, port=PORT, netns=ns.sender, program=program)


def check_counted(kf: KernelFilter, sent_total: int, allowed_total: int) -> str:
    """The charter program's counters against what the sender sent while it was attached."""
    st = kf.stats()
    counted = st.passed + st.not_allowed + st.malformed + st.oversized + st.fragment
    if counted != sent_total:
        raise RuntimeError(f"the charter filter counted {counted} datagrams, the sender sent {sent_total}: the "
                           "figure would not be the filter's")
    mixed = sent_total - allowed_total
    return (f"the charter program's counters (last round): {counted:,} datagrams judged = all sent; of the mix "
            f"run's {mixed:,}: {st.passed - allowed_total:,} passed, {st.not_allowed + st.malformed:,} dropped "
            f"({st.not_allowed:,} not allowed, {st.malformed:,} malformed)")


VARIANTS = ("none", "pass_through", "charter_egress")
TRAFFIC = (("mix", "mix (half forbidden)"), ("allowed", "names allowed only"))


def kernel_table(runs: dict[tuple[str, str], list[Sent]], rate: Callable[[Sent], float], title: str) -> None:
    print(f"{title}:")
    print(f"  {'traffic':<22} {'no program':>11} {'pass_through':>13} {'charter':>9} {'ratio':>6}  per round")
    for traffic, label in TRAFFIC:
        none, floor, charter = ([rate(x) for x in runs[(v, traffic)]] for v in VARIANTS)
        ratios = ", ".join(f"{c / f:.2f}" for c, f in zip(charter, floor, strict=True))
        print(f"  {label:<22} {statistics.median(none):>11,.0f} {statistics.median(floor):>13,.0f} "
              f"{statistics.median(charter):>9,.0f} {statistics.median(charter) / statistics.median(floor):>6.2f}"
              f"  {ratios}")


def kernel_figures(workdir: Path, whitelist: Whitelist, seconds: float, rounds: int) -> None:
    print("\n-- kernel filter: TC egress of a veth between two network namespaces --")
    if os.geteuid() != 0:
        print("not measured: the kernel filter needs root (network namespaces, eBPF, tc); the gate enforces alone")
        return
    try:
        sender = compile_sender(workdir)
    except RuntimeError as err:
        print(f"not measured: {err}")
        return
    core = max(os.sched_getaffinity(0))
    files = {"mix": write_datagrams(workdir / "mix.bin", mix()),
             "allowed": write_datagrams(workdir / "allowed.bin", allowed_datagrams())}
    names = whitelist.kernel_names()
    runs: dict[tuple[str, str], list[Sent]] = {(v, t): [] for v in VARIANTS for t, _ in TRAFFIC}
    note = ""
    with veth_pair() as ns:
        sink = socket_in(ns.receiver, (ns.dst, PORT))  # bound, never read: a full queue drops cheaply
        try:
            def c_send(which: str) -> Sent:
                return send(ns, core, [str(sender), ns.dst, str(PORT), f"{seconds}", str(files[which])], seconds)

            python = send(ns, core, [sys.executable, "-c", PYTHON_SENDER, ns.dst, str(PORT), f"{seconds}",
                                     str(files["mix"])], seconds)
            bare = c_send("mix")
            softirq0 = ksoftirqd_ns(core)
            try:
                for r in range(rounds):
                    for variant in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
                        kf = attach(names, ns, variant) if variant != "none" else None
                        try:
                            m, a = c_send("mix"), c_send("allowed")
                            if kf is not None and variant == "charter_egress":
                                note = check_counted(kf, m.total + a.total, a.total)
                        finally:
                            if kf is not None:
                                kf.close()
                        runs[(variant, "mix")].append(m)
                        runs[(variant, "allowed")].append(a)
            except KernelEnforcementUnavailable as err:
                print(f"not measured: {err.message}")
                return
            deferred = (ksoftirqd_ns(core) - softirq0) / 1e9
        finally:
            sink.close()
    sender_cpu = sum(x.cpu_seconds for xs in runs.values() for x in xs)
    wall = sum(x.seconds for xs in runs.values() for x in xs)
    print(f"traffic generator: {SENDER_SOURCE.name} (gcc -O2, sendmmsg in batches of 64, one connected UDP socket) "
          f"pinned to CPU {core} with taskset; with no program it sends {bare.per_cpu:,.0f} datagrams per "
          f"CPU-second, a Python send() loop {python.per_cpu:,.0f} ({python.per_cpu / bare.per_cpu:.2f}x): the "
          "kernel path is most of the cost either way; the C sender keeps the generator's share small")
    print(f"the sender had CPU {core} for {sender_cpu / wall:.0%} of the wall time (the machine is shared: load "
          f"{os.getloadavg()[0]:.1f}); ksoftirqd/{core} ran {deferred:.2f} s against the sender's {sender_cpu:.1f} s "
          "(receive work deferred there is not in the CPU-time figure)")
    print(note)
    print(f"{rounds} rounds x {seconds:g} s per variant and traffic, variants alternating; medians")
    kernel_table(runs, lambda x: x.per_cpu,
                 "datagrams per CPU-second of the sender's core (send, TC egress, veth and the receiving stack in "
                 "its softirq): THE FIGURE")
    kernel_table(runs, lambda x: x.rate, "datagrams per wall-second (depends on the CPU share the shared core gave)")
    print("ratio = charter_egress ÷ pass_through at the same attachment (same device, hook and tc preference): 1.00 "
          "= the filter costs nothing; above 1 when the datagrams it drops no longer cross the veth and the "
          "receiving stack")


# -- 2. the userspace gate -----------------------------------------------------------------------------------


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the UDP socket bound to 127.0.0.1:``port`` (/proc/net/udp's drops)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            return int(fields[-1])
    raise RuntimeError(f"no UDP socket on 127.0.0.1:{port} in /proc/net/udp")


def force_rcvbuf(sock: socket.socket | TransportSocket) -> int:
    if os.geteuid() == 0:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def fill(port: int, datagrams: list[bytes], n: int) -> int:
    """Queue ``n`` datagrams (round robin) on the socket at 127.0.0.1:``port``; how many its buffer dropped."""
    before = udp_drops(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.connect(("127.0.0.1", port))
        k = len(datagrams)
        for i in range(n):
            tx.send(datagrams[i % k])
    return udp_drops(port) - before


def prefill(port: int, datagrams: list[bytes], n: int) -> None:
    if lost := fill(port, datagrams, n):
        raise RuntimeError(f"{lost} of {n} datagrams were dropped at the receiving socket while it was filled")


def fitting(datagrams: list[bytes], n: int) -> int:
    """``n``, or fewer datagrams when a receive buffer (as large as this user may make it) does not hold them."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            force_rcvbuf(rx)
            rx.bind(("127.0.0.1", 0))
            lost = fill(rx.getsockname()[1], datagrams, n)
        if not lost:
            return n
        n = (n - lost) * 9 // 10
        print(f"(a receive buffer holds fewer datagrams than asked: {n:,} per receiver)")


class _Counting(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.count += 1


async def until(done: Callable[[], bool], limit: float = 300.0) -> float:
    """Seconds until ``done()`` (polled every 2 ms while the loop reads), from now."""
    start = time.perf_counter()
    while not done():
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"the receiver did not drain its socket within {limit:g} s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


def processed(state: GateState) -> int:
    """Lines the gate has decided on (kept or dropped; an oversized or non-ASCII datagram counts once)."""
    gate = state.gate
    assert gate is not None
    return gate.counters.kept + sum(gate.counters.dropped.values())


def units(state: GateState, datagrams: list[bytes]) -> list[int]:
    """How much each datagram adds to :func:`processed` (a dry run through a gate with the same charter)."""
    out = []
    for d in datagrams:
        before = processed(state)
        state.receive(d)
        out.append(processed(state) - before)
    return out


def new_state(charter: bytes) -> GateState:
    state = GateState(secrets.token_bytes(32))
    state.apply(charter, charter_hash(charter))
    assert state.gate is not None
    state.gate.grant(CONSENTED, "mesh_user_session_seconds")
    return state


async def gate_figures(workdir: Path, charter: bytes, n: int, rounds: int) -> None:
    print("\n-- userspace gate: workers.gate.server's datagram endpoint, deploy/charter.yaml in force --")
    datagrams = mix()
    n = fitting(datagrams, n)
    dry = new_state(charter)
    per = units(dry, datagrams)
    expected = sum(per[i % len(per)] for i in range(n))
    gate_counters = dry.gate.counters if dry.gate else None
    assert gate_counters is not None
    settings = Settings(data_dir=workdir / "gate", charter_gate_host="127.0.0.1", charter_gate_udp_port=0,
                        charter_gate_port=processes.free_port(), charter_kernel=False)
    running = await start(settings, kernel=False)
    try:
        running.state.apply(charter, charter_hash(charter))
        assert running.state.gate is not None
        running.state.gate.grant(CONSENTED, "mesh_user_session_seconds")
        rcvbuf = force_rcvbuf(running.transport.get_extra_info("socket"))
        loop = asyncio.get_running_loop()
        rates: dict[str, list[float]] = {"bare": [], "asyncio": [], "gate": []}

        def bare() -> float:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
                force_rcvbuf(rx)
                rx.bind(("127.0.0.1", 0))
                prefill(rx.getsockname()[1], datagrams, n)
                start_at = time.perf_counter()
                for _ in range(n):
                    rx.recvfrom(65536)
                return time.perf_counter() - start_at

        async def counting() -> float:
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            force_rcvbuf(rx)
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            transport, proto = await loop.create_datagram_endpoint(_Counting, sock=rx)
            try:
                prefill(rx.getsockname()[1], datagrams, n)
                return await until(lambda: proto.count >= n)
            finally:
                transport.close()

        async def gate() -> float:
            state = running.state
            base = processed(state)
            prefill(running.udp_port, datagrams, n)  # nothing awaits meanwhile: the gate reads none yet
            return await until(lambda: processed(state) - base >= expected)

        for r in range(rounds):
            order = ["bare", "asyncio", "gate"] if r % 2 == 0 else ["gate", "asyncio", "bare"]
            for which in order:
                seconds = bare() if which == "bare" else await (counting() if which == "asyncio" else gate())
                rates[which].append(n / seconds)
    finally:
        await running.close()
    c = gate_counters
    share = ", ".join(f"{reason} {count}" for reason, count in sorted(c.dropped.items()))
    print(f"{len(datagrams)} distinct datagrams ({sum(per)} lines) cycled; per cycle the gate keeps {c.kept} "
          f"lines (node/peer/user pseudonymised, {c.stripped_labels} labels stripped) and drops {share}")
    print(f"each receiver drains {n:,} datagrams queued on its socket first (SO_RCVBUF {rcvbuf >> 20} MiB, forced, "
          f"the same for all; none lost); {rounds} rounds, medians:")
    bare_rate, asyncio_rate, gate_rate = (statistics.median(rates[k]) for k in ("bare", "asyncio", "gate"))
    print(f"{'receiver':<44} {'datagrams/s':>12} {'gate ÷ it':>10}")
    print(f"{'bare UDP receive loop (blocking recvfrom)':<44} {bare_rate:>12,.0f} {gate_rate / bare_rate:>10.3f}")
    print(f"{'asyncio datagram endpoint, counting only':<44} {asyncio_rate:>12,.0f} {gate_rate / asyncio_rate:>10.3f}")
    print(f"{'charter gate (judge, strip, pseudonymise)':<44} {gate_rate:>12,.0f}")
    print(f"the gate's ratio to the bare loop: {gate_rate / bare_rate:.3f} (per round "
          f"{min(g / b for g, b in zip(rates['gate'], rates['bare'], strict=True)):.3f} .. "
          f"{max(g / b for g, b in zip(rates['gate'], rates['bare'], strict=True)):.3f}); "
          f"{gate_rate * sum(per) / len(per):,.0f} lines/s")


# -- 3. export and report intake -----------------------------------------------------------------------------


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


async def seed_records(audit: AuditLog, subject: str, n: int) -> None:
    """``n`` records about ``subject`` in the project database: audit entries naming them, one in twenty a shelter
    access request (those count twice in the bundle: shelter requests and audit entries)."""
    for i in range(n):
        if i % 20 == 0:
            await audit.append("shelter.access.requested", f"doc-{i}", {"requester": subject})
        else:
            await audit.append("capability.checked", f"action-{i}", {"agent": subject, "n": i})


def signed_export(deployment: Deployment, user: LocalAccount, public_key: bytes, nonce: int) -> ExportRequest:
    req = ExportRequest(subject=user.address, public_key=public_key.hex(), nonce=nonce, expiry=2**40)
    ctx = ConsentContext(chain_id=deployment.chain_id, charter_address=deployment.address(CHARTER))
    return req.model_copy(update={"signature": sign_export(req, ctx, user.key.hex())})


async def rights_figures(work: Path, records: int, exports: int, reports: int) -> None:
    print(f"\n-- data export end to end ({records:,} records) and violation-report intake latency --")
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)  # "not pinned to IPFS" on every export
    port = processes.free_port()
    temporal = processes.spawn(processes.temporal_args(
        db_file=work / "temporal.db", port=port, ui_port=None, http_port=processes.free_port(),
        metrics_port=processes.free_port(), search_attributes=SEARCH_ATTRIBUTES), work / "temporal.log")
    chain: BenchVoters | None = None
    try:
        processes.wait_for_port(temporal, port, "Temporal", work / "temporal.log")
        chain = await make_voters(work, 0)  # anvil with the contracts deployed (the Charter is the signing domain)
        committee = make_committee()
        charter_file = write_charter(work / "charter.yaml", committee, per_hour=10_000)
        settings = Settings(data_dir=work, temporal_address=f"127.0.0.1:{port}", chain_rpc_url=chain.rpc_url,
                            charter_file=charter_file, ipfs_api_url="http://127.0.0.1:9")
        deployment = load_deployment(settings.contracts_file)
        create_keyring(settings.resolved_codec_key_file)
        converter = build_data_converter(load_keyring(settings.resolved_codec_key_file))
        client = await Client.connect(settings.temporal_address, data_converter=converter)
        reporter = await Client.connect(settings.temporal_address, identity=REPORTER_IDENTITY,
                                        data_converter=converter)
        tq = str(uuid.uuid4())
        async with open_resources(settings) as res:
            user, user_box = Account.create("bench-export-user"), PrivateKey.generate()
            t0 = time.perf_counter()
            await seed_records(res.audit, user.address, records)
            print(f"setup (not in any figure): {records:,} audit entries naming the user appended in "
                  f"{time.perf_counter() - t0:.0f} s; Temporal dev server, anvil with the contracts, SQLite; IPFS "
                  "not running (the bundle is delivered to the data dir)")
            floor = Worker(client, task_queue=tq + "-floor", workflows=[ActivityFloorWorkflow, NoopUpdateWorkflow],
                           activities=[bench_noop])
            async with build_worker(client, res, tq), floor:
                await export_figures(client, tq, settings, res, deployment, user, user_box, exports)
                await intake_figures(client, reporter, tq, committee, reports)
    finally:
        processes.stop(temporal)
        if chain is not None:
            chain.stop()


async def export_figures(client: Client, tq: str, settings: Settings, res: Resources, deployment: Deployment,
                         user: LocalAccount, user_box: PrivateKey, n: int) -> None:
    ends, floors, direct = [], [], []
    delivery: ExportDelivery | None = None
    rights = CharterRights(httpx.AsyncClient(), CharterStore(res.database),
                           charter_file=settings.charter_file, contracts_file=settings.contracts_file,
                           prometheus_url="http://127.0.0.1:9", gate_url="http://127.0.0.1:9",
                           gate_token_file=settings.data_dir / "none", pseudonym_key_file=settings.data_dir / "none",
                           data_dir=settings.data_dir, ipfs=None)
    env = ActivityEnvironment()
    for i in range(n):
        t0 = time.perf_counter()
        await client.execute_workflow(ActivityFloorWorkflow.run, FloorInput(calls=1), id=f"floor-{uuid.uuid4()}",
                                      task_queue=tq + "-floor")
        floors.append(time.perf_counter() - t0)
        req = signed_export(deployment, user, bytes(user_box.public_key), nonce=i + 1)
        t0 = time.perf_counter()
        result: ExportResult = await client.execute_workflow(
            DataExportWorkflow.run, ExportInput(request=req), id=keys.export_id(user.address, i + 1), task_queue=tq)
        ends.append(time.perf_counter() - t0)
        delivery = result.delivery
        t0 = time.perf_counter()
        await env.run(rights.build_export, BuildExportInput(
            export_id=f"direct-{i}", subject=user.address.lower(), public_key=bytes(user_box.public_key).hex()))
        direct.append(time.perf_counter() - t0)
    await rights.http.aclose()
    assert delivery is not None
    bundle = read_bundle(open_bundle(Path(delivery.file).read_bytes(), bytes(user_box)))
    rows = sum(len(sec["rows"]) for sec in bundle["sections"])
    end, fl, dr = statistics.median(ends), statistics.median(floors), statistics.median(direct)
    print(f"export: {n} requests in a row, each signed (EIP-712), checked against the chain, gathered, bundled "
          f"(JSON + CSV), sealed to the user's X25519 key and delivered; the last one opened and read back: "
          f"{rows:,} records (the shelter requests among the seeded entries are listed twice, and each export "
          f"audits itself), {delivery.size / 1024:,.0f} KiB sealed")
    print(f"  end to end (caller: start to result), median     {end:8.2f} s")
    print(f"  floor: a workflow with one no-op activity         {fl:8.3f} s   export ÷ it {end / fl:8.1f}")
    print(f"  the bundle built directly (same activity, no Temporal) {dr:5.2f} s   export ÷ it {end / dr:8.2f}")
    print(f"  against the charter's 24 h promise: {end / 86400:.1e} of the window")


async def intake_figures(client: Client, reporter: Client, tq: str, committee: Committee, n: int) -> None:
    noop = await client.start_workflow(NoopUpdateWorkflow.run, id=f"noop-{uuid.uuid4()}", task_queue=tq + "-floor")
    await noop.execute_update(NoopUpdateWorkflow.touch, "warm")
    made = [make_report(f"bench report {i}: a forbidden metric seen at node n{i}", committee) for i in range(n + 1)]
    await submit_report(reporter, tq, made[0].submission)  # starts the intake: not in the figures
    floor, lat = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await noop.execute_update(NoopUpdateWorkflow.touch, str(i))
        floor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await submit_report(reporter, tq, made[i + 1].submission)
        lat.append(time.perf_counter() - t0)
    await noop.signal(NoopUpdateWorkflow.finish)
    shipped = load_charter(DEFAULT_CHARTER_FILE.read_bytes()).spec.reports.pow_bits
    sample = made[1].submission
    t0 = time.perf_counter()
    solve_pow(sample.receipt_hash, sample.sealed_report, shipped)
    pow_s = time.perf_counter() - t0
    print(f"report intake: {n} sealed reports submitted one after another (caller-observed: the submit update to "
          "the case id; each opens a ViolationReportWorkflow) vs a no-op update on the same server and worker")
    print(f"  {'':<26} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  {'report submit':<26} {pct(lat, 50) * 1e3:>8.1f} {pct(lat, 99) * 1e3:>8.1f}")
    print(f"  {'no-op update (floor)':<26} {pct(floor, 50) * 1e3:>8.1f} {pct(floor, 99) * 1e3:>8.1f}")
    print(f"  {'ratio':<26} {pct(lat, 50) / pct(floor, 50):>8.2f} {pct(lat, 99) / pct(floor, 99):>8.2f}")
    print(f"  not in the latency: the reporter's proof of work, solved before the call ({POW_BITS} bits here; one "
          f"solve at the shipped charter's {shipped} bits took {pow_s:.1f} s on this machine)")


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="sending time per kernel measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (kernel and gate)")
    parser.add_argument("--gate-datagrams", type=int, default=60_000, help="datagrams each receiver drains")
    parser.add_argument("--records", type=int, default=10_000, help="records held about the exporting user")
    parser.add_argument("--exports", type=int, default=3, help="exports (and floor runs) for the median")
    parser.add_argument("--reports", type=int, default=100, help="reports submitted for the intake latency")
    parser.add_argument("--skip", action="append", default=[], choices=("kernel", "gate", "rights"),
                        help="leave a part out (repeatable)")
    args = parser.parse_args()
    charter = DEFAULT_CHARTER_FILE.read_bytes()
    whitelist = Whitelist(load_charter(charter, str(DEFAULT_CHARTER_FILE)))
    with tempfile.TemporaryDirectory(prefix="westworld-bench-charter-") as tmp:
        workdir = Path(tmp)
        if "kernel" not in args.skip:
            kernel_figures(workdir, whitelist, args.seconds, args.rounds)
        if "gate" not in args.skip:
            asyncio.run(gate_figures(workdir, charter, args.gate_datagrams, args.rounds))
        if "rights" not in args.skip:
            (workdir / "rights").mkdir()
            asyncio.run(rights_figures(workdir / "rights", args.records, args.exports, args.reports))


if __name__ == "__main__":
    main()
