"""`westworld up | down | status`: the embedded single-machine stack.

Components (each only started if not already answering on its port): the Temporal dev server (SQLite file in
the data dir, UI on, search attributes registered), anvil with the project's contracts deployed (addresses
in ``contracts.json``), the codec server (its token created in ``<data dir>/codec-token``, mode 0600, and the
capability URL for the UI's browser Codec Server setting printed), the project database migrated to the newest
schema (``activities/sql/migrations``), the worker. What ``up`` started is recorded
in ``stack.json`` so that ``down`` stops exactly that and nothing else. Logs go to ``<data dir>/logs``.

Once the worker runs, ``up`` syncs the Temporal Schedules and starts the network's anomaly watch (workflow
``anomaly-watch``) unless it runs or the ``anomaly_watch`` setting is off. The watch is durable: ``down`` stops the
server under it and the next ``up`` finds it running again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from westworld.charter_sync import CHARTER_JOB
from westworld.errors import StartError
from westworld.keys import SEARCH_ATTRIBUTES
from workers.codec import create_keyring
from workers.codec_server import ensure_token, token_path, ui_endpoint
from workers.settings import Settings
from workers.stack import processes
from workers.stack.anvil import anvil_args
from workers.stack.arlocal import arlocal_args
from workers.stack.ipfs_daemon import stack_args as ipfs_stack_args
from workers.stack.prometheus_server import prometheus_args


@dataclass(frozen=True)
class Component:
    name: str
    port: int
    address: str
    command: Callable[[Settings], list[str]]
    timeout: float = 30.0


def _chain_port(s: Settings) -> int:
    return urlparse(s.chain_rpc_url).port or 8545


def _temporal_port(s: Settings) -> int:
    return int(s.temporal_address.rsplit(":", 1)[1])


def _url_port(url: str, default: int) -> int:
    return urlparse(url).port or default


def _local(url: str) -> bool:
    """A local endpoint the stack starts itself (an empty or remote URL is someone else's service)."""
    return urlparse(url).hostname in {"127.0.0.1", "localhost"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.main", *args]


def components(s: Settings) -> list[Component]:
    codec_url = f"http://127.0.0.1:{s.codec_server_port}"
    return [
        Component(
            "temporal", _temporal_port(s), f"UI http://127.0.0.1:{s.temporal_ui_port}  gRPC {s.temporal_address}",
            lambda s: processes.temporal_args(
                db_file=s.data_dir / "temporal.db", port=_temporal_port(s), ui_port=s.temporal_ui_port,
                http_port=s.temporal_http_port, metrics_port=s.temporal_metrics_port,
                # No --ui-codec-endpoint: the UI serves its configured endpoint to anyone at /api/v1/settings,
                # so the codec token goes to the browser's Codec Server setting instead (see codec_ui_hint).
                search_attributes=SEARCH_ATTRIBUTES,
            ),
        ),
        Component(
            "chain", _chain_port(s), s.chain_rpc_url,
            lambda s: anvil_args(_chain_port(s), s.data_dir / "anvil-state.json"),
        ),
        Component("codec-server", s.codec_server_port, codec_url, lambda s: _cli("codec-server")),
        # the charter gate before Prometheus: node telemetry reaches Prometheus only through it
        Component("charter-gate", s.charter_gate_port, f"telemetry udp {s.charter_gate_host}:{s.charter_gate_udp_port}"
                  f", {s.charter_gate_url}/metrics", lambda s: _cli("charter-gate")),
        Component(
            "prometheus", s.prometheus_port, f"http://127.0.0.1:{s.prometheus_port}",
            lambda s: prometheus_args(s.prometheus_port, s.data_dir / "prometheus", s.prometheus_scrape_interval,
                                      {"westworld-worker": f"127.0.0.1:{s.worker_metrics_port}",
                                       CHARTER_JOB: f"{s.charter_gate_host}:{s.charter_gate_port}"},
                                      targets_dir=s.prometheus_targets_dir),
        ),
        *([Component("ipfs", _url_port(s.ipfs_api_url, 5001), f"RPC {s.ipfs_api_url}/api/v0 (js-ipfs, offline)",
                     lambda s: ipfs_stack_args(s.data_dir / "ipfs", _url_port(s.ipfs_api_url, 5001),
                                               s.logs_dir / "ipfs.log"), timeout=90.0)]
          if _local(s.ipfs_api_url) else []),
        *([Component("arlocal", _url_port(s.arweave_url, 1984), f"{s.arweave_url} (local Arweave gateway)",
                     lambda s: arlocal_args(_url_port(s.arweave_url, 1984), s.data_dir / "arlocal"), timeout=60.0)]
          if _local(s.arweave_url) else []),
        Component("worker", s.worker_metrics_port, f"metrics http://127.0.0.1:{s.worker_metrics_port}/metrics "
                  f"(own counters :{s.worker_metrics_port + 1})", lambda s: _cli("worker"), timeout=60.0),
        # after the worker: it reads contracts.json and the migrated database the worker's turn prepared
        Component("web", s.web_port, f"vote intake {s.resolved_web_url}/v1/votes", lambda s: _cli("web"),
                  timeout=60.0),
    ]


def _state_file(s: Settings) -> Path:
    return s.data_dir / "stack.json"


def _read_state(s: Settings) -> dict[str, int]:
    try:
        data: dict[str, int] = json.loads(_state_file(s).read_text())
        return data
    except FileNotFoundError:
        return {}


def _write_state(s: Settings, state: dict[str, int]) -> None:
    _state_file(s).write_text(json.dumps(state, indent=2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _settings_env(s: Settings) -> dict[str, str]:
    """Child processes get the same settings the parent resolved."""
    env = {f"WESTWORLD_{k.upper()}": str(v) for k, v in s.model_dump().items() if v is not None}
    env["WESTWORLD_DATA_DIR"] = str(s.data_dir)
    return env


def component(s: Settings, name: str) -> Component:
    """The component `up` starts under ``name``, its command built from ``s``."""
    found = next((c for c in components(s) if c.name == name), None)
    if found is None:
        raise KeyError(f"no component {name!r} in this stack (components: {', '.join(c.name for c in components(s))})")
    return found


def launch(s: Settings, comp: Component) -> subprocess.Popen[bytes]:
    """Start one component the way `up` does (its command from the settings, its log in the logs dir, the
    settings in its environment) and return once it listens; the test fixtures start theirs through this too."""
    s.logs_dir.mkdir(parents=True, exist_ok=True)
    log = s.logs_dir / f"{comp.name}.log"
    proc = processes.spawn(comp.command(s), log, env=_settings_env(s))
    try:
        processes.wait_for_port(proc, comp.port, comp.name, log, comp.timeout)
    except StartError:
        processes.stop(proc)
        raise
    return proc


def up(s: Settings, echo: Callable[[str], None]) -> None:
    s.data_dir.mkdir(parents=True, exist_ok=True)
    s.logs_dir.mkdir(parents=True, exist_ok=True)
    if not s.resolved_codec_key_file.exists():
        create_keyring(s.resolved_codec_key_file)
        echo(f"created payload encryption keys at {s.resolved_codec_key_file}")
    codec_token, created = ensure_token(s)
    if created:
        echo(f"created the codec server token at {token_path(s)} (mode 0600)")
    from workers.stack.standing import ensure_operator_key

    if ensure_operator_key(s):  # the genesis operator: signs mints, registrations, halts (docs/capabilities.md)
        echo(f"created the operator key at {s.data_dir / 'operator.key'} (yours: pass it with --key)")
    from workers.stack.committee import committee_key_file, ensure_local_charter

    s, made = ensure_local_charter(s)  # before the Charter is deployed and the worker and gate read it
    if made:
        echo(f"created the local report committee key at {committee_key_file(s)} (mode 0600) and {s.charter_file} "
             "(deploy/charter.yaml plus its public key; the Charter is deployed at that file's hash)")
    state = _read_state(s)
    for comp in components(s):
        if comp.name == "worker":
            _ensure_contracts(s, echo)
            _migrate_database(s, echo)
        if processes.port_open(comp.port):
            echo(f"{comp.name:13} already running  {comp.address}")
            continue
        proc = launch(s, comp)
        state[comp.name] = proc.pid
        _write_state(s, state)
        echo(f"{comp.name:13} started          {comp.address}  (log {s.logs_dir / f'{comp.name}.log'})")
    echo(codec_ui_hint(s, codec_token))
    asyncio.run(_sync_workflows(s, echo))


def codec_ui_hint(s: Settings, token: str) -> str:
    """How to let the Temporal UI decode payloads: the capability URL for the browser's Codec Server setting."""
    return (f"to see decoded payloads in the Temporal UI (http://127.0.0.1:{s.temporal_ui_port}): open "
            f"'Codec Server' in its top bar, paste {ui_endpoint(s, token)} as the browser endpoint and choose "
            "'Use my browser setting'. That URL holds the codec token: it decrypts every payload, keep it private.")


async def _sync_workflows(s: Settings, echo: Callable[[str], None]) -> None:
    """The schedules and the long-running workflows `up` keeps, against the running worker."""
    from workers.client import connect
    from workers.stack.schedules import sync_schedules
    from workers.stack.standing import sync_charter, sync_watch

    client = await connect(s)
    await sync_schedules(client, s.task_queue, echo)
    await sync_watch(client, s, echo)
    await sync_charter(client, s, echo)


def _ensure_contracts(s: Settings, echo: Callable[[str], None]) -> None:
    """Deploy the contracts unless the recorded deployment is live on this chain."""
    from workers.stack.contracts import deploy_if_needed

    deployed = asyncio.run(deploy_if_needed(s.chain_rpc_url, s.chain_deployer_key, s.contracts_file,
                                             policy_file=s.policy_file, charter_file=s.charter_file))
    if deployed:
        echo(f"{'contracts':13} deployed         addresses in {s.contracts_file}")


def _migrate_database(s: Settings, echo: Callable[[str], None]) -> None:
    """Bring the project database's schema to the newest migration before the worker starts (idempotent)."""
    from activities.sql.database import Database
    from activities.sql.migrate import migrate

    url = s.resolved_database_url
    echo(f"{'database':13} migrated         {Database(url).safe_url} at revision {asyncio.run(migrate(url))}")


def down(s: Settings, echo: Callable[[str], None]) -> None:
    state = _read_state(s)
    if not state:
        echo("nothing to stop: `westworld up` started nothing recorded in " + str(_state_file(s)))
    for comp in reversed(components(s)):
        pid = state.pop(comp.name, None)
        if pid is None:
            continue
        stopped = processes.stop_pid(pid)
        echo(f"{comp.name:13} {'stopped' if stopped else 'was not running'}")
        _write_state(s, state)


def status(s: Settings) -> list[tuple[str, str, str]]:
    """(component, health, address) for each component."""
    state = _read_state(s)
    rows = []
    for comp in components(s):
        healthy = processes.port_open(comp.port)
        pid = state.get(comp.name)
        owner = f"pid {pid}" if pid and _alive(pid) else "not started by up"
        rows.append((comp.name, f"{'up' if healthy else 'DOWN'} ({owner})", comp.address))
    rows.append(("anomaly-watch", _watch_health(s),
                 "workflow anomaly-watch" + ("" if s.anomaly_watch else " (off by setting: `up` leaves it)")))
    rows.append(("charter", *charter_health(s)))
    return rows


def charter_health(s: Settings) -> tuple[str, str]:
    """(health, what enforces) of the charter, from the gate's /status: plainly whether the kernel filter runs."""
    from activities.http import HttpError, get_json

    try:
        status = get_json(f"{s.charter_gate_url}/status", 3)
    except (HttpError, ValueError):
        return "DOWN", f"charter gate not answering at {s.charter_gate_url}: node telemetry is not collected"
    version = status["charter"]["version"]
    health = f"v{version} in force" if version else "CLOSED (no charter pushed yet; every datagram is dropped)"
    kernel = status["kernel"]
    if kernel["loaded"]:
        return health, f"kernel filter loaded (tc egress of {kernel['device']}); the userspace gate enforces too"
    return health, f"kernel filter not loaded ({kernel['reason']}); the userspace gate enforces"


def _watch_health(s: Settings) -> str:
    if not processes.port_open(_temporal_port(s)):
        return "unknown (Temporal is down)"

    async def ask() -> bool:
        from workers.client import connect
        from workers.stack.standing import watch_running

        return await watch_running(await connect(s))

    try:
        running = asyncio.run(asyncio.wait_for(ask(), timeout=10))
    except Exception as err:
        return f"unknown ({type(err).__name__})"
    return "running" if running else "NOT RUNNING"
