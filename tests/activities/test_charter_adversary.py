"""The adversarial node against the whole enforcement chain, all real: the Charter on anvil, CharterSyncWorkflow on
Temporal putting it in force, the charter gate with its eBPF filter at TC egress of ``lo`` (the interface the
telemetry leaves by), the session's Prometheus scraping the gate (and, as if misconfigured, the adversary's own
/metrics) under the charter's relabel rules, a real mesh node pushing its telemetry, and ``meshnode.adversary``.

Afterwards: Prometheus's TSDB holds no series outside the whitelist (names and labels, through its series and
label-values API), every refused datagram is counted (the kernel's counters and drop map by name hash, the gate's
counters by reason), pushes straight at Prometheus were all refused, and the drops are in the audit log.

Where the kernel cannot load the filter (not root, no bcc or headers), the same test runs with the gate alone and
says so; the kernel's counts are then not asserted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from activities.charter_chain import DEFAULT_CHARTER_FILE
from tests.charter_support import audited, charter_settings, gate_job
from tests.fixtures.harness import Harness, eventually
from tests.fixtures.prometheus import PrometheusServer
from westworld.charter import load_charter, name_hash
from westworld.charter_sync import CHARTER_JOB, CharterSyncInput, CharterSyncState, series_problem
from workers.gate import server as charter_gate
from workers.stack import processes
from workflows.charter_sync import CharterSyncWorkflow

CHARTER = load_charter(DEFAULT_CHARTER_FILE.read_bytes())


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer) -> dict[str, Any]:
    return charter_settings(prometheus, charter_kernel=True, charter_kernel_device="lo")


@pytest.fixture
async def gate(harness: Harness) -> AsyncIterator[charter_gate.RunningGate]:
    running = await charter_gate.start(harness.settings, kernel=True)
    try:
        yield running
    finally:
        await running.close()


def spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def series(prometheus: PrometheusServer, match: str) -> list[dict[str, str]]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{prometheus.url}/api/v1/series", params={"match[]": match, "start": "0"})
        answer.raise_for_status()
        found: list[dict[str, str]] = answer.json()["data"]
        return found


async def label_values(prometheus: PrometheusServer, label: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{prometheus.url}/api/v1/label/{label}/values")
        answer.raise_for_status()
        values: list[str] = answer.json()["data"]
        return values


async def test_the_adversarial_node_gets_nothing_past_the_charter(
        harness: Harness, gate: charter_gate.RunningGate, prometheus: PrometheusServer) -> None:
    s = harness.settings
    kernel = gate.state.kernel
    if kernel is None:
        print(f"charter: kernel filter not loaded ({gate.state.kernel_reason}); the userspace gate enforces alone")
    else:
        print(f"charter: kernel filter loaded at tc egress of {kernel.device} (pref {kernel.pref})")
    adversary_metrics = processes.free_port()
    with gate_job(prometheus, [f"127.0.0.1:{s.charter_gate_port}", f"127.0.0.1:{adversary_metrics}"]):
        handle = await harness.client.start_workflow(
            CharterSyncWorkflow.run, CharterSyncInput(poll_interval=1.0), id=f"charter-sync-{uuid.uuid4().hex[:8]}",
            task_queue=harness.task_queue)
        node = adversary = None
        try:
            state: CharterSyncState = await eventually(
                lambda: handle.query(CharterSyncWorkflow.state), lambda st: st.applied_version == 1, timeout=30)
            layers = {x.layer: x.state for x in state.layers}
            assert layers["gate"] == "applied" and layers["scrape"] == "applied"
            assert layers["kernel"] == ("applied" if kernel else "unavailable")

            # a real mesh node pushing its telemetry, and the adversary
            node = spawn(["meshnode.node", "--id", "n-honest", "--listen", f"127.0.0.1:{processes.free_port()}",
                          "--metrics-port", str(processes.free_port()), "--admin-port", str(processes.free_port()),
                          "--telemetry", f"127.0.0.1:{gate.udp_port}", "--telemetry-interval-ms", "200"])
            adversary = spawn(["meshnode.adversary", "--gate", f"127.0.0.1:{gate.udp_port}", "--prometheus",
                               prometheus.url.removeprefix("http://"), "--metrics-port", str(adversary_metrics),
                               "--json"])
            assert adversary.stdout is not None
            report = json.loads(await asyncio.to_thread(adversary.stdout.readline))
            sent: dict[str, dict[str, int]] = report["sent"]

            # what the charter allows arrives, pseudonymised, and nothing else does
            kept = await eventually(lambda: series(prometheus, f'{{job="{CHARTER_JOB}"}}'), lambda found: {
                "mesh_link_quality", "mesh_node_uptime_seconds"} <= {x["__name__"] for x in found}, timeout=30)
            await asyncio.sleep(4 * prometheus.scrape_interval)  # a few more scrapes of everything sent
            kept = await series(prometheus, f'{{job="{CHARTER_JOB}"}}')
            problems = [(x, why) for x in kept if (why := series_problem(CHARTER, x))]
            assert not problems, problems
            gate_instance = f"127.0.0.1:{s.charter_gate_port}"
            for x in kept:
                for label in ("node", "user"):
                    if x["instance"] == gate_instance and label in x:
                        assert x[label].startswith("p1_"), f"{label} not pseudonymised: {x}"
            names = set(await label_values(prometheus, "__name__"))
            for forbidden in ("user_location", "user_email_address", "browsing_history_url_count",
                              "mesh_gps_latitude", "Mesh_link_quality", "MESH_LINK_QUALITY",
                              "mesh_user_session_seconds"):
                assert forbidden not in names, f"{forbidden} reached Prometheus's TSDB"
            assert not any(not n.isascii() for n in names)
            for label in ("email", "location", "ip_addr"):
                assert await label_values(prometheus, label) == [], f"label {label} reached Prometheus"
            honest = [x for x in kept if x["__name__"] == "mesh_node_uptime_seconds" and x["instance"] == gate_instance]
            assert len(honest) >= 2, "the honest node's and the adversary's allowed uptime both arrive (pseudonymised)"

            # pushes straight at Prometheus were all refused
            assert report["direct"] and all(not 200 <= code < 300 for code in report["direct"].values()), report

            # every refused datagram is counted
            status = gate.state.status()
            dropped = status["gate"]["dropped"]
            assert dropped["no_consent"] >= 1
            assert dropped["malformed_line"] >= 4
            assert status["gate"]["stripped_labels"] == 4  # email, location; ip_addr, user
            if kernel is not None:
                expected_drops = sum(per["drop"] for per in sent.values())
                stats = kernel.stats()
                print(f"kernel: {stats}; gate: {status['gate']}")
                assert stats.not_allowed + stats.malformed + stats.oversized == expected_drops, (stats, sent)
                assert stats.not_allowed == sent["forbidden_name"]["drop"]
                assert stats.oversized == sent["oversized"]["drop"]
                drops = kernel.drops()
                for name in ("user_location", "user_email_address", "mesh_gps_latitude",
                             "mesh_link_quality:user_location"):
                    assert drops.get(name_hash(name), 0) >= 1, f"no kernel drop counted for {name}"
            else:  # the gate saw everything and refused it itself
                assert dropped["not_whitelisted"] + dropped["blocked"] >= sent["forbidden_name"]["drop"]

            # and the decision trail is in the audit log
            async def drop_totals() -> dict[str, int]:
                entries = await audited(harness.resources, "charter.drops")
                return entries[-1].payload["totals"] if entries else {}

            def in_audit(t: dict[str, int]) -> bool:
                if kernel is None:
                    return any(k.startswith("gate:") for k in t)
                return sum(v for k, v in t.items() if k.startswith("kernel:")) == expected_drops

            expected_drops = sum(per["drop"] for per in sent.values())
            totals = await eventually(drop_totals, in_audit, timeout=30)
            assert totals.get("gate:no_consent", 0) >= 1
            [applied] = await audited(harness.resources, "charter.applied")
            assert applied.payload["version"] == 1

            # forbidden metrics seen would open a violation case; the shipped charter names no committee key to
            # seal it to, so the sync says so in the audit log (once per period) and goes on enforcing
            [uncased] = await eventually(lambda: audited(harness.resources, "charter.forbidden.uncased"),
                                         lambda e: len(e) >= 1, timeout=30)
            assert "committee_public_key" in uncased.payload["reason"] and uncased.payload["forbidden_since_last_entry"]
            state = await handle.query(CharterSyncWorkflow.state)
            assert not state.violation_cases and "committee_public_key" in state.case_problem
            before = len(await audited(harness.resources, "charter.drops"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(3):
                    sock.sendto(b"user_location:1|g", ("127.0.0.1", gate.udp_port))
            await eventually(lambda: audited(harness.resources, "charter.drops"), lambda e: len(e) > before,
                             timeout=30)
            assert len(await audited(harness.resources, "charter.forbidden.uncased")) == 1, "once per period"
            polls = (await handle.query(CharterSyncWorkflow.state)).polls
            await eventually(lambda: handle.query(CharterSyncWorkflow.state), lambda st: st.polls > polls, timeout=30)
        finally:
            for proc in (node, adversary):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=10)
            await handle.cancel()
