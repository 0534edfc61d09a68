"""A small mesh node: relays real UDP traffic between peers and exports Prometheus metrics.

    python -m meshnode.node --id n0 --listen 127.0.0.1:7000 --peers 127.0.0.1:7001,127.0.0.1:7002 \
        --metrics-port 9100 --admin-port 9101 --version 1.4.0 --config probe_interval_ms=100

Every ``probe_interval_ms`` the node sends a probe to a random peer *through another random peer* (two hops:
origin -> relay -> target); the target acknowledges straight to the origin, which records the round trip in
``mesh_message_latency_seconds``. A probe not acknowledged within ``probe_timeout_ms`` is lost.

Behaviour depends on the version (``westworld.mesh.VERSIONS``) and on config knobs that override it:
``relay_delay_ms`` (a relay holds each message this long), ``drop_rate`` (fraction of relayed messages it
drops, counted in ``mesh_relay_errors_total``), ``probe_interval_ms``, ``probe_timeout_ms``. Version
``1.5.0-rc1`` is the faulty build: 40 ms relay delay and 8 % of relayed messages dropped, so it is measurably
worse than ``1.4.0``.

With ``--telemetry HOST:PORT`` the node also pushes its charter telemetry every ``--telemetry-interval-ms`` as one
UDP datagram (the charter gate's wire format, ``bpf/charter_egress.c``: ``name:value|g|#label:value,...`` per line):
``mesh_node_uptime_seconds`` (node, version), ``mesh_packet_loss_ratio`` and ``mesh_latency_p99_seconds`` (node).
The /metrics pull path stays as it is.

Admin HTTP API (JSON) on ``--admin-host``/``--admin-port``:
    GET /status                          id, version, config, behaviour, faults, uptime_s, peers
    POST /version {"version": "1.5.0-rc1"}   switch behaviour live (like a restart into that build); returns previous
    POST /config {"drop_rate": "0.1"}    merge config knobs
    POST /fault {"id", "delay_ms", "jitter_ms", "loss_pct", "partition": [peer host:port, ...]}  userspace chaos
    DELETE /fault  (all)  |  DELETE /fault/<id>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from westworld.errors import InvalidInput
from westworld.mesh import DEFAULT_VERSION, behaviour

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)


@dataclass
class Fault:
    id: str = "default"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    partition: list[str] = field(default_factory=list)


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("mesh_message_latency_seconds", "Round trip of a two-hop probe (origin->relay->"
                                 "target->origin)", registry=self.registry, buckets=LATENCY_BUCKETS)
        self.sent = Counter("mesh_messages_sent_total", "Probes sent", registry=self.registry)
        self.delivered = Counter("mesh_messages_delivered_total", "Probes acknowledged", registry=self.registry)
        self.lost = Counter("mesh_messages_lost_total", "Probes not acknowledged in time", registry=self.registry)
        self.relayed = Counter("mesh_messages_relayed_total", "Messages forwarded for others", registry=self.registry)
        self.relay_errors = Counter("mesh_relay_errors_total", "Relayed messages dropped or not forwardable",
                                    registry=self.registry)
        self.info = Gauge("mesh_node_info", "The running build", ["node_id", "version"], registry=self.registry)
        self._node_id = node_id

    def set_version(self, version: str) -> None:
        self.info.clear()
        self.info.labels(node_id=self._node_id, version=version).set(1)


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class MeshNode(asyncio.DatagramProtocol):
    def __init__(self, node_id: str, listen: str, peers: list[str], version: str, config: dict[str, str]) -> None:
        self.id, self.listen, self.peers = node_id, listen, [p for p in peers if p != listen]
        self.version, self.config = version, dict(config)
        self.knobs = behaviour(version, self.config)
        self.faults: dict[str, Fault] = {}
        self.metrics = Metrics(node_id)
        self.metrics.set_version(version)
        self.pending: dict[str, float] = {}
        self.latencies: deque[float] = deque(maxlen=512)  # the last round trips, for the pushed p99
        self.counts = {"sent": 0, "lost": 0}
        self.started = time.monotonic()
        self.transport: asyncio.DatagramTransport | None = None
        self._rng = random.Random()

    # -- traffic ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _partitioned(self, peer: str) -> bool:
        return any(peer in f.partition for f in self.faults.values())

    def send(self, msg: dict[str, Any], to: str) -> None:
        """Send with the userspace faults applied (delay, jitter, loss, partition)."""
        if self.transport is None or self._partitioned(to):
            return
        loss = 1.0
        for f in self.faults.values():
            loss *= 1.0 - f.loss_pct / 100.0
        if self._rng.random() >= loss:
            return
        delay = sum(f.delay_ms + self._rng.uniform(-f.jitter_ms, f.jitter_ms) for f in self.faults.values())
        data = json.dumps(msg).encode()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay / 1000.0, self._sendto, data, to)
        else:
            self._sendto(data, to)

    def _sendto(self, data: bytes, to: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, _addr(to))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        sender = f"{addr[0]}:{addr[1]}"
        if self._partitioned(sender):
            return
        try:
            msg = json.loads(data)
            kind = msg["t"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "relay":
            asyncio.get_running_loop().create_task(self._relay(msg))
        elif kind == "deliver":
            self.send({"t": "ack", "id": msg["id"]}, msg["origin"])
        elif kind == "ack":
            sent_at = self.pending.pop(msg["id"], None)
            if sent_at is not None:
                self.metrics.delivered.inc()
                self.metrics.latency.observe(time.perf_counter() - sent_at)
                self.latencies.append(time.perf_counter() - sent_at)

    async def _relay(self, msg: dict[str, Any]) -> None:
        if self._rng.random() < self.knobs["drop_rate"]:
            self.metrics.relay_errors.inc()
            return
        if self.knobs["relay_delay_ms"] > 0:
            await asyncio.sleep(self.knobs["relay_delay_ms"] / 1000.0)
        target = msg.get("dst")
        if not isinstance(target, str):
            self.metrics.relay_errors.inc()
            return
        self.metrics.relayed.inc()
        self.send({"t": "deliver", "id": msg["id"], "origin": msg["origin"]}, target)

    def probe(self) -> None:
        if len(self.peers) == 0:
            return
        if len(self.peers) >= 2:
            relay, target = self._rng.sample(self.peers, 2)
        else:
            relay = target = self.peers[0]
        msg_id = uuid.uuid4().hex
        self.pending[msg_id] = time.perf_counter()
        self.metrics.sent.inc()
        self.counts["sent"] += 1
        self.send({"t": "relay", "id": msg_id, "origin": self.listen, "dst": target}, relay)

    def expire(self) -> None:
        deadline = time.perf_counter() - self.knobs["probe_timeout_ms"] / 1000.0
        for msg_id in [m for m, at in self.pending.items() if at < deadline]:
            del self.pending[msg_id]
            self.metrics.lost.inc()
            self.counts["lost"] += 1

    async def run_probes(self) -> None:
        while True:
            self.probe()
            self.expire()
            await asyncio.sleep(self.knobs["probe_interval_ms"] / 1000.0)

    # -- charter telemetry ------------------------------------------------------------------------
    def telemetry(self) -> bytes:
        """One datagram of the node's charter telemetry (only names and labels the shipped charter allows)."""
        node = f"node:{self.id}"
        lines = [f"mesh_node_uptime_seconds:{time.monotonic() - self.started:.3f}|g|#{node},version:{self.version}"]
        if self.counts["sent"]:
            lines.append(f"mesh_packet_loss_ratio:{self.counts['lost'] / self.counts['sent']:.6f}|g|#{node}")
        if self.latencies:
            ordered = sorted(self.latencies)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            lines.append(f"mesh_latency_p99_seconds:{p99:.6f}|g|#{node}")
        return ("\n".join(lines) + "\n").encode("ascii")

    async def push_telemetry(self, target: str, interval_ms: float) -> None:
        """Send :meth:`telemetry` to the charter gate at ``target`` every ``interval_ms`` (fire and forget)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=_addr(target))
        try:
            while True:
                with contextlib.suppress(OSError):  # a gate not up yet: the next datagram tries again
                    transport.sendto(self.telemetry())
                await asyncio.sleep(interval_ms / 1000.0)
        finally:
            transport.close()

    # -- admin -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "config": self.config, "behaviour": self.knobs,
                "faults": [asdict(f) for f in self.faults.values()], "peers": self.peers,
                "uptime_s": round(time.monotonic() - self.started, 3)}

    def admin(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/status":
            return 200, self.status()
        if method == "POST" and path == "/version":
            version = body.get("version")
            if not isinstance(version, str) or not version:
                return 400, {"error": 'body must be {"version": "<version>"}'}
            previous, self.version = self.version, version
            self.knobs = behaviour(version, self.config)
            self.metrics.set_version(version)
            return 200, {"previous": previous, "version": version}
        if method == "POST" and path == "/config":
            merged = {**self.config, **{str(k): str(v) for k, v in body.items()}}
            try:
                self.knobs = behaviour(self.version, merged)
            except InvalidInput as err:
                return 400, {"error": err.message}
            previous_config, self.config = self.config, merged
            return 200, {"previous": previous_config, "config": merged}
        if method == "POST" and path == "/fault":
            try:
                fault = Fault(**body)
            except TypeError as err:
                return 400, {"error": f"bad fault: {err}"}
            self.faults[fault.id] = fault
            return 200, {"faults": [asdict(f) for f in self.faults.values()]}
        if method == "DELETE" and path.startswith("/fault"):
            fault_id = path.removeprefix("/fault").strip("/")
            if fault_id:
                self.faults.pop(fault_id, None)
            else:
                self.faults.clear()
            return 200, {"faults": [asdict(f) for f in self.faults.values()]}
        return 404, {"error": f"no route {method} {path}"}

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            raw = await reader.readexactly(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            code, answer = self.admin(method, path, body if isinstance(body, dict) else {})
        except (ValueError, asyncio.IncompleteReadError) as err:
            code, answer = 400, {"error": str(err)}
        payload = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    config = dict(kv.split("=", 1) for kv in args.config)
    peers = [p for p in args.peers.split(",") if p]
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    node = MeshNode(args.id, args.listen, peers, args.version, config)
    host = _addr(args.listen)[0]
    start_http_server(args.metrics_port, addr=args.metrics_host or host, registry=node.metrics.registry)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: node, local_addr=_addr(args.listen))
    server = await asyncio.start_server(node.handle_http, args.admin_host or host, args.admin_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probes = loop.create_task(node.run_probes())
    pushes = loop.create_task(node.push_telemetry(args.telemetry, args.telemetry_interval_ms)) \
        if args.telemetry else None
    await stop.wait()
    probes.cancel()
    if pushes is not None:
        pushes.cancel()
    server.close()
    transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Westworld mesh node")
    parser.add_argument("--id", required=True)
    parser.add_argument("--listen", required=True, help="host:port of the UDP mesh socket")
    parser.add_argument("--peers", default="", help="comma-separated host:port of the other nodes")
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--metrics-host", default="", help="default: the --listen host")
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--admin-host", default="", help="default: the --listen host")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--config", action="append", default=[], help="knob=value (repeatable)")
    parser.add_argument("--telemetry", default="", help="host:port of the charter gate to push telemetry to")
    parser.add_argument("--telemetry-interval-ms", type=float, default=1000.0)
    args = parser.parse_args()
    try:
        behaviour(args.version, dict(kv.split("=", 1) for kv in args.config))
    except InvalidInput as err:
        parser.error(err.message)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
