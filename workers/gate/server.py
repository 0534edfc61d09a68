"""The charter gate process (`westworld charter-gate`, started by `westworld up`): every enforcement point of one
host in one place.

- **Userspace**: node telemetry arrives as UDP datagrams (``bpf/charter_egress.c`` gives the format) and is judged
  by :class:`activities.charter_gate.CharterGate`; what is kept is served on ``GET /metrics``, the only telemetry
  Prometheus scrapes. Until a charter is pushed the gate is closed: every datagram is dropped (``no_charter``).
- **Kernel**: where it can (root, bcc, headers), the gate attaches the eBPF filter at TC egress of the interface
  the telemetry leaves by (the route to the gate's address: ``lo`` here) for the gate's UDP port; its map starts
  empty (everything to the port is dropped) and follows the whitelist. Where it cannot, ``GET /status`` says why
  and ``westworld status`` prints it: the userspace gate enforces alone, never silently.
- **Charter pushes**: ``PUT /charter`` (the worker's CharterSyncWorkflow, token of ``<data dir>/charter-gate-token``,
  mode 0600) carries the charter file's bytes and ``X-Charter-Hash``; the gate checks the bytes hash to it,
  validates the charter and refuses an older version than the one in force.

Identifiers are pseudonymised under the key in ``<data dir>/charter-pseudonym.key`` (created, mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from activities.charter_gate import CharterGate
from activities.charter_kernel import STAT_NAMES, KernelFilter, pref_for
from westworld.charter import Whitelist, charter_hash, load_charter
from westworld.errors import CharterInvalid, InvalidInput, KernelEnforcementUnavailable
from workers.gate.consent_routes import add_consent_routes
from workers.settings import Settings, charter_gate_key_file, charter_gate_token_file, load_settings

log = logging.getLogger("westworld.charter_gate")

NO_CHARTER = "no_charter"
HASH_HEADER = "X-Charter-Hash"
MAX_CHARTER_BYTES = 1 << 20


def _secret_file(path: Path, make: str) -> str:
    """The secret in ``path``, created (mode 0600, never overwritten) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


def ensure_token(s: Settings) -> str:
    return _secret_file(charter_gate_token_file(s), secrets.token_urlsafe(32))


def egress_device(host: str) -> str:
    """The interface a datagram to ``host`` leaves by (``ip route get``)."""
    out = subprocess.run(["ip", "-o", "route", "get", host], capture_output=True, text=True, check=False).stdout
    words = out.split()
    if "dev" not in words:
        raise KernelEnforcementUnavailable(f"no route to {host}: {out.strip() or 'ip route get said nothing'}",
                                           reason="no_route")
    return words[words.index("dev") + 1]


@dataclass
class GateState:
    """The gate in force (None until the first push), the kernel filter or why there is none."""

    key: bytes
    gate: CharterGate | None = None
    policy_hash: str = ""
    kernel: KernelFilter | None = None
    kernel_reason: str = "not requested (charter_kernel is off)"
    closed_drops: int = 0
    consents_loaded: bool = False  # the consents in force, read from the store by the worker, were pushed
    live_consents: dict[tuple[str, str], bool] = field(default_factory=dict)  # changes since this gate started

    def receive(self, datagram: bytes) -> None:
        if self.gate is None:
            self.closed_drops += 1
            return
        self.gate.receive(datagram)

    def apply(self, content: bytes, claimed_hash: str) -> dict[str, Any]:
        """Put the charter in ``content`` in force; raises InvalidInput (hash, validation, version)."""
        digest = charter_hash(content)
        if not hmac.compare_digest(digest, claimed_hash.lower()):
            raise InvalidInput(f"the charter's bytes hash to {digest}, not {claimed_hash}: refused")
        charter = load_charter(content, "pushed charter")
        if digest == self.policy_hash:
            return {"state": "unchanged", "version": charter.metadata.version, "policy_hash": digest}
        current = self.gate.whitelist.charter.metadata.version if self.gate else 0
        if charter.metadata.version < current:
            raise InvalidInput(f"charter version {charter.metadata.version} is older than version {current} in "
                               "force: refused")
        whitelist = Whitelist(charter)
        if self.gate is None:
            self.gate = CharterGate(whitelist, self.key, [k for k, granted in self.live_consents.items() if granted])
        else:
            self.gate.whitelist = whitelist
            self.gate.epoch = charter.spec.pseudonymisation.key_epoch
            allowed = set(whitelist.kernel_names())
            for k in [k for k in self.gate.series if k[0] not in allowed]:
                del self.gate.series[k]  # a metric the new charter no longer allows is not served any more
        if self.kernel is not None:
            self.kernel.set_names(whitelist.kernel_names())
        self.policy_hash = digest
        return {"state": "applied", "version": charter.metadata.version, "policy_hash": digest}

    def consent(self, subject: str, metric: str, grant: bool) -> dict[str, Any]:
        """One consent change (the consent workflow, after the store recorded it); remembered for a later load."""
        self.live_consents[(subject.lower(), metric)] = grant
        if self.gate is None:  # no charter yet: nothing collected, nothing to purge; applied with the charter
            return {"state": "no_charter", "purged": 0}
        if grant:
            self.gate.grant(subject, metric)
            return {"state": "granted", "purged": 0}
        return {"state": "withdrawn", "purged": self.gate.withdraw(subject, metric)}

    def load_consents(self, in_force: list[tuple[str, str]]) -> dict[str, Any]:
        """The consents in force in the store (pushed by the worker after this gate started). A change this gate
        received since it started is newer than or as new as the store's read, so it wins over the list."""
        merged = {(s.lower(), m): True for s, m in in_force}
        merged.update(self.live_consents)
        self.live_consents = merged
        if self.gate is not None:
            self.gate.consents = {k for k, granted in merged.items() if granted}
        self.consents_loaded = True
        return {"state": "loaded", "consents": sum(merged.values())}

    def consents_status(self) -> dict[str, Any]:
        return {"loaded": self.consents_loaded, "in_force": sum(self.live_consents.values())}

    def kernel_status(self) -> dict[str, Any]:
        if self.kernel is None:
            return {"loaded": False, "reason": self.kernel_reason}
        return {"loaded": True, "device": self.kernel.device, "hook": "tc egress", "pref": self.kernel.pref,
                "stats": dict(zip(STAT_NAMES, [int(v) for v in vars_of(self.kernel.stats())], strict=True)),
                "drops_by_name_hash": {f"{h:016x}": n for h, n in self.kernel.drops().items()}}

    def status(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "charter": {"version": gate.whitelist.charter.metadata.version if gate else 0,
                        "policy_hash": self.policy_hash, "names": list(gate.whitelist.kernel_names()) if gate else []},
            "kernel": self.kernel_status(),
            "consents": self.consents_status(),
            "gate": {"kept": gate.counters.kept if gate else 0,
                     "dropped": {**(dict(gate.counters.dropped) if gate else {}), NO_CHARTER: self.closed_drops},
                     "stripped_labels": gate.counters.stripped_labels if gate else 0,
                     "series": len(gate.series) if gate else 0},
        }

    def exposition(self) -> str:
        out = self.gate.exposition() if self.gate else ""
        out += "# TYPE westworld_charter_gate_closed_dropped_total counter\n"
        out += f"westworld_charter_gate_closed_dropped_total {self.closed_drops}\n"
        if self.kernel is not None:
            stats = self.kernel.stats()
            out += "# TYPE westworld_charter_kernel_packets_total counter\n"
            for name, value in zip(STAT_NAMES, vars_of(stats), strict=True):
                out += f'westworld_charter_kernel_packets_total{{reason="{name}"}} {value}\n'
            out += "# TYPE westworld_charter_kernel_drops_total counter\n"
            for h, n in sorted(self.kernel.drops().items()):
                out += f'westworld_charter_kernel_drops_total{{name_hash="{h:016x}"}} {n}\n'
        out += "# TYPE westworld_charter_kernel_loaded gauge\n"
        out += f"westworld_charter_kernel_loaded {1 if self.kernel else 0}\n"
        return out


def vars_of(stats: Any) -> list[int]:
    return [int(getattr(stats, n)) for n in STAT_NAMES]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, state: GateState) -> None:
        self.state = state

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.state.receive(data)


def attach_kernel(state: GateState, s: Settings) -> None:
    """Load the kernel filter (empty map: closed until the first push), or record plainly why it cannot."""
    if not s.charter_kernel:
        return
    try:
        device = s.charter_kernel_device or egress_device(s.charter_gate_host)
        state.kernel = KernelFilter.attach((), device=device, port=s.charter_gate_udp_port,
                                           pref=pref_for(s.charter_gate_udp_port))
        log.info("kernel filter attached at tc egress of %s for udp port %d", device, s.charter_gate_udp_port)
    except KernelEnforcementUnavailable as err:
        state.kernel_reason = err.message
        log.warning("charter: kernel filter not loaded (%s); the userspace gate enforces", err.message)


@dataclass
class RunningGate:
    state: GateState
    udp_port: int
    http_port: int
    transport: asyncio.DatagramTransport
    runner: web.AppRunner

    async def close(self) -> None:
        """Stop receiving and serving, detach the kernel filter; a second call does nothing."""
        if self.transport.is_closing() and self.state.kernel is None:
            return
        self.transport.close()
        await self.runner.cleanup()
        if self.state.kernel is not None:
            self.state.kernel.close()
            self.state.kernel = None


async def start(s: Settings, *, kernel: bool = True) -> RunningGate:
    """Open the UDP receiver and the HTTP side on the settings' address and ports; attach the kernel filter."""
    token = ensure_token(s)
    key = bytes.fromhex(_secret_file(charter_gate_key_file(s), secrets.token_hex(32)))
    state = GateState(key)
    if kernel:
        attach_kernel(state, s)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(state),
                                                       local_addr=(s.charter_gate_host, s.charter_gate_udp_port))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.exposition(), content_type="text/plain", charset="utf-8")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(state.status())

    async def put_charter(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "a charter push needs the gate's token"}, status=401)
        body = await request.content.read(MAX_CHARTER_BYTES + 1)
        if len(body) > MAX_CHARTER_BYTES:
            return web.json_response({"error": "charter larger than 1 MiB"}, status=413)
        try:
            result = state.apply(body, request.headers.get(HASH_HEADER, ""))
        except (CharterInvalid, InvalidInput) as err:
            return web.json_response({"error": err.message}, status=409)
        result["kernel"] = state.kernel_status()
        result["consents"] = state.consents_status()
        return web.json_response(result)

    app = web.Application(client_max_size=MAX_CHARTER_BYTES + 1)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_put("/charter", put_charter)
    add_consent_routes(app, state, token)  # POST /consent, PUT /consents: workers/gate/consent_routes.py
    runner = web.AppRunner(app, access_log=None)  # no access log: no scraper or node addresses are kept
    await runner.setup()
    site = web.TCPSite(runner, s.charter_gate_host, s.charter_gate_port, reuse_address=True)
    await site.start()
    return RunningGate(state, transport.get_extra_info("sockname")[1], s.charter_gate_port, transport, runner)


async def serve(s: Settings) -> None:
    gate = await start(s, kernel=s.charter_kernel)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("charter gate: udp %s:%d, http %s", s.charter_gate_host, gate.udp_port, s.charter_gate_url)
    try:
        await stop.wait()
    finally:
        await gate.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_settings()))
