"""An adversarial mesh node build: it tries every way around the charter it can think of.

    python -m meshnode.adversary --gate 127.0.0.1:8125 --prometheus 127.0.0.1:9090 --metrics-port 9200

Attacks (each a UDP datagram to the gate's telemetry port unless said otherwise):

- ``forbidden_name``: names the charter blocks or does not list (``user_location``, an e-mail, a URL), alone or
  hidden behind an allowed line in the same datagram, or as a suffix of an allowed name (``mesh_link_quality:user``);
- ``forbidden_label``: allowed names carrying labels nobody allowed (``email``, ``location``, ``ip_addr``);
- ``no_consent``: a consent-only metric for a subject who never consented;
- ``look_alike``: upper case, a Cyrillic a (U+0430) for the Latin one, a zero-width space, full-width letters;
- ``oversized`` and ``malformed``: 2 KB and 60 KB datagrams, an empty one, a name without a value, bad types,
  binary garbage, NUL bytes;
- ``direct``: datagrams and HTTP pushes (remote write, text import, pushgateway style) straight at Prometheus's port;
- its own ``/metrics`` serves forbidden series (``user_location``, an allowed name with an ``email`` label), for a
  Prometheus someone points at the node directly.

It also sends ``control`` datagrams the charter allows, so a test can tell "nothing got through" from "it works".
``--json`` prints what it sent (count of datagrams per attack, what the kernel filter should do with each: ``drop``
or ``pass``, and the HTTP statuses Prometheus answered) once sent; it then serves /metrics until SIGTERM.
Imports nothing of the project but the standard library and prometheus_client: it is the system under test's enemy.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, start_http_server


@dataclass(frozen=True)
class Attack:
    kind: str
    datagram: bytes
    kernel: str  # what the kernel filter should do: "drop" or "pass" (then the gate judges the lines)


def attacks(node: str = "adv") -> list[Attack]:
    n = f"node:{node}"
    out = [
        Attack("control", f"mesh_link_quality:0.93|g|#{n},peer:n2\n".encode(), "pass"),
        Attack("control", f"mesh_node_uptime_seconds:12|g|#{n},version:9.9.9\n".encode(), "pass"),
        Attack("forbidden_name", b"user_location:48.85|g|#user:0xabc", "drop"),
        Attack("forbidden_name", b"user_email_address:1|g|#node:adv", "drop"),
        Attack("forbidden_name", b"browsing_history_url_count:3|c", "drop"),
        Attack("forbidden_name", b"mesh_link_quality:user_location:1|g", "drop"),  # the name is the whole head
        Attack("forbidden_name", f"mesh_link_quality:1|g|#{n},peer:n3\nuser_location:2|g\n".encode(), "drop"),
        Attack("forbidden_name", b"mesh_gps_latitude:48.8|g", "drop"),
        Attack("forbidden_label", f"mesh_link_quality:0.5|g|#{n},peer:n4,email:a.b,location:paris\n".encode(),
               "pass"),
        Attack("forbidden_label", f"mesh_packet_loss_ratio:0.1|g|#{n},ip_addr:10.0.0.7,user:0xabc\n".encode(),
               "pass"),
        Attack("no_consent", f"mesh_user_session_seconds:300|g|#{n},user:0x{'ab' * 20}\n".encode(), "pass"),
        Attack("look_alike", b"Mesh_link_quality:1|g", "drop"),
        Attack("look_alike", b"MESH_LINK_QUALITY:1|g", "drop"),
        Attack("look_alike", "mesh_link_qu\u0430lity:1|g".encode(), "drop"),  # Cyrillic a
        Attack("look_alike", "mesh_link_quality\u200b:1|g".encode(), "drop"),  # zero-width space
        Attack("look_alike", "\uff4desh_link_quality:1|g".encode(), "drop"),  # full-width m
        Attack("oversized", b"mesh_link_quality:1|g|#node:adv,peer:" + b"x" * 2000, "drop"),
        Attack("oversized", b"mesh_link_quality:1|g\n" * 2800, "drop"),  # ~60 KB
        Attack("malformed", b"mesh_link_quality", "drop"),
        Attack("malformed", b"mesh_link_quality:1", "drop"),
        Attack("malformed", b":1|g", "drop"),
        Attack("malformed", b"\xff\xfe\x00\x01garbage|g", "drop"),
        Attack("malformed", b"mesh_link_quality\x00:1|g", "drop"),
        Attack("malformed", b"9mesh:1|g", "drop"),
        Attack("malformed", b"", "drop"),
        # the kernel reads names only; these pass it and the gate refuses their value, type or labels
        Attack("malformed", b"mesh_link_quality:abc|g", "pass"),
        Attack("malformed", b"mesh_link_quality:1|x", "pass"),
        Attack("malformed", b"mesh_link_quality:nan|g", "pass"),
        Attack("malformed", b'mesh_link_quality:1|g|#node:"a b"', "pass"),
    ]
    return out


def direct_pushes(prometheus: str) -> dict[str, int]:
    """Pushes straight at Prometheus (it accepts none: the gate is the only way in). Path -> HTTP status."""
    body = b'user_location{user="0xabc"} 48.85\n'
    statuses: dict[str, int] = {}
    for method, path in (("POST", "/api/v1/write"), ("POST", "/api/v1/import/prometheus"),
                         ("PUT", "/metrics/job/adversary"), ("POST", "/api/v1/otlp/v1/metrics")):
        req = urllib.request.Request(f"http://{prometheus}{path}", data=body, method=method,
                                     headers={"Content-Type": "text/plain"})
        try:
            with urllib.request.urlopen(req, timeout=5) as answer:  # noqa: S310 (a URL the test chose)
                statuses[path] = int(answer.status)
        except urllib.error.HTTPError as err:
            statuses[path] = int(err.code)
        except OSError:
            statuses[path] = 0
    host, _, port = prometheus.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(body, (host, int(port)))  # Prometheus has no UDP listener: this goes nowhere
    return statuses


def forbidden_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("user_location", "Where a user is", ["user"], registry=registry).labels(user="0xabc").set(48.85)
    Gauge("mesh_link_quality", "Allowed name, forbidden label", ["node", "peer", "email"],
          registry=registry).labels(node="adv", peer="n2", email="a.b").set(0.5)
    Gauge("mesh_node_uptime_seconds", "Allowed", ["node", "version"], registry=registry).labels(
        node="adv-direct", version="1").set(3)
    return registry


def send_all(gate: str, node: str) -> dict[str, dict[str, int]]:
    host, _, port = gate.rpartition(":")
    sent: dict[str, dict[str, int]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for a in attacks(node):
            s.sendto(a.datagram, (host, int(port)))
            per = sent.setdefault(a.kind, {"drop": 0, "pass": 0})
            per[a.kernel] += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description="Westworld adversarial mesh node")
    parser.add_argument("--gate", required=True, help="host:port of the charter gate's telemetry (UDP)")
    parser.add_argument("--prometheus", default="", help="host:port of Prometheus, to push at it directly")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve forbidden series here (0: do not)")
    parser.add_argument("--id", default="adv")
    parser.add_argument("--json", action="store_true", help="print what was sent as one JSON line")
    args = parser.parse_args()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=forbidden_registry())
    report = {"sent": send_all(args.gate, args.id),
              "direct": direct_pushes(args.prometheus) if args.prometheus else {}}
    print(json.dumps(report) if args.json else report, flush=True)
    if not args.metrics_port:
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
