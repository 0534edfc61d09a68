"""The charter gate: the userspace enforcement point every node's telemetry goes through before Prometheus.

Nodes push telemetry datagrams (``bpf/charter_egress.c`` describes the format: ``name:value|g|#label:value,...``,
one metric per line) to the gate's UDP port. For each line the gate takes the same decision as every other layer
(:meth:`westworld.charter.Whitelist.judge`): a name outside the charter, blocked, malformed or a look-alike is
dropped; labels the charter does not allow are stripped; a consent-only metric is kept only for a subject whose
consent is in force; identifiers are replaced by keyed pseudonyms. What is kept is served as Prometheus text on
``GET /metrics``, so Prometheus scrapes the gate, never the node. Every drop is counted by reason.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from westworld.charter import Reason, Verdict, Whitelist, pseudonym

MAX_DATAGRAM = 1024  # the kernel filter's MAX_PAYLOAD: a longer datagram is refused here too
MAX_LABEL_VALUE = 128
LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
TYPES = {"g": "gauge", "c": "counter"}

# Drop reasons beyond the judge's (westworld.charter.Reason).
OVERSIZED = "oversized"
MALFORMED_LINE = "malformed_line"
NOT_UTF8 = "not_ascii"


@dataclass(frozen=True)
class Line:
    name: str
    value: float
    kind: str
    labels: dict[str, str]


def parse_line(line: str) -> Line | None:
    """One telemetry line, or None when it is not in the format (the caller counts it as malformed)."""
    head, bar, tail = line.partition("|")
    if not bar:
        return None
    name, colon, raw = head.rpartition(":")
    kind, _, rest = tail.partition("|")
    if not colon or kind not in TYPES:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    labels: dict[str, str] = {}
    if rest:
        if not rest.startswith("#"):
            return None
        for pair in rest[1:].split(","):
            key, sep, val = pair.partition(":")
            if not sep or not key or key in labels or not LABEL_VALUE.fullmatch(val):
                return None
            labels[key] = val
    return Line(name, value, kind, labels)


@dataclass
class GateCounters:
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    stripped_labels: int = 0


class CharterGate:
    """The gate's state: the whitelist in force, the consents, the kept series and the counters."""

    def __init__(self, whitelist: Whitelist, key: bytes, consents: Iterable[tuple[str, str]] = ()) -> None:
        self.whitelist = whitelist
        self._key = key
        self.epoch = whitelist.charter.spec.pseudonymisation.key_epoch
        pseudonym(key, self.epoch, "check", "check")  # refuses a short key now, not at the first datagram
        self.consents = {(s.lower(), m) for s, m in consents}
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]] = {}
        self.counters = GateCounters()

    def __repr__(self) -> str:  # the key never shows
        return f"CharterGate(charter v{self.whitelist.charter.metadata.version}, {len(self.series)} series)"

    def receive(self, datagram: bytes) -> None:
        if len(datagram) > MAX_DATAGRAM:
            self.counters.dropped[OVERSIZED] += 1
            return
        try:
            text = datagram.decode("ascii")
        except UnicodeDecodeError:
            self.counters.dropped[NOT_UTF8] += 1  # a look-alike name or value: nothing of it is kept
            return
        for raw in text.split("\n"):
            if raw:
                self.receive_line(raw)

    def receive_line(self, raw: str) -> None:
        line = parse_line(raw)
        if line is None:
            self.counters.dropped[MALFORMED_LINE] += 1
            return
        decision = self.whitelist.judge(line.name, line.labels, self.consents)
        if decision.verdict is Verdict.DROP:
            self.counters.dropped[decision.reason.value] += 1
            return
        self.counters.stripped_labels += len(decision.stripped_labels)
        labels = {k: (pseudonym(self._key, self.epoch, k, v) if k in self.whitelist.pseudonymised else v)
                  for k, v in decision.kept_labels.items()}
        key = (line.name, tuple(sorted(labels.items())))
        previous = self.series.get(key, (line.kind, 0.0))[1]
        self.series[key] = (line.kind, previous + line.value if line.kind == "c" else line.value)
        self.counters.kept += 1

    def grant(self, subject: str, metric: str) -> None:
        self.consents.add((subject.lower(), metric))

    def withdraw(self, subject: str, metric: str) -> int:
        """Withdraw a consent and purge the subject's series of that metric; the number of series purged."""
        self.consents.discard((subject.lower(), metric))
        label = self.whitelist.subject_label
        mark = (label, pseudonym(self._key, self.epoch, label, subject))
        doomed = [k for k in self.series if k[0] == metric and mark in k[1]]
        for k in doomed:
            del self.series[k]
        return len(doomed)

    def exposition(self) -> str:
        """Prometheus text format 0.0.4: the kept series, then the gate's own counters."""
        out: list[str] = []
        typed: set[str] = set()
        for (name, labels), (kind, value) in sorted(self.series.items()):
            if name not in typed:
                out.append(f"# TYPE {name} {TYPES[kind]}")
                typed.add(name)
            out.append(f"{name}{_labels(labels)} {value!r}")
        out.append("# TYPE westworld_charter_gate_kept_total counter")
        out.append(f"westworld_charter_gate_kept_total {self.counters.kept}")
        out.append("# TYPE westworld_charter_gate_stripped_labels_total counter")
        out.append(f"westworld_charter_gate_stripped_labels_total {self.counters.stripped_labels}")
        out.append("# TYPE westworld_charter_gate_dropped_total counter")
        for reason in sorted({*(r.value for r in Reason if r is not Reason.KEPT), OVERSIZED, MALFORMED_LINE,
                              NOT_UTF8}):
            out.append(f'westworld_charter_gate_dropped_total{{reason="{reason}"}} {self.counters.dropped[reason]}')
        return "\n".join(out) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    # Values are limited to [A-Za-z0-9_.:-] on the way in: nothing to escape.
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, gate: CharterGate) -> None:
        self.gate = gate

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.gate.receive(data)


@dataclass
class RunningGate:
    gate: CharterGate
    udp_port: int
    http_port: int
    _transport: asyncio.DatagramTransport
    _runner: web.AppRunner

    async def close(self) -> None:
        self._transport.close()
        await self._runner.cleanup()


async def serve(gate: CharterGate, host: str = "127.0.0.1", udp_port: int = 0, http_port: int = 0) -> RunningGate:
    """Receive telemetry on ``udp_port`` and serve ``/metrics`` on ``http_port`` (0: any free port)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(gate), local_addr=(host, udp_port))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=gate.exposition(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)  # no access log: scrapers' addresses are not kept
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, http_port))
    await web.SockSite(runner, sock).start()
    bound_http = sock.getsockname()[1]
    bound_udp = transport.get_extra_info("sockname")[1]
    return RunningGate(gate, bound_udp, bound_http, transport, runner)
