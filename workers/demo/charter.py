"""The charter demo on the live stack: the charter on chain and in force, then an adversarial node whose forbidden
telemetry never reaches Prometheus, its drops counted by the kernel filter (where it loaded) and the gate; then the
users' rights: a consent granted and withdrawn (the subject's series purged from Prometheus), a data export
delivered and opened with the user's key, an anonymous report decided by five committee signatures inside its 72 h
window; and the audit entries each of them left.

The adversary (``meshnode/adversary.py``) runs as its own process against the stack's gate and Prometheus; the demo
then reads Prometheus's series for the gate's job through its API and checks each against the charter. The demo is
a client: it signs as the user and as the committee members (the local chain's mnemonic accounts 0-14, whom the
shipped charter names), opens reports with the local committee key `westworld up` made
(``<data dir>/charter-committee.key``, workers/stack/committee.py), and reads the audit log through the worker's
AuditVerifyWorkflow; it opens no database.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from eth_account import Account

from activities.chain import ChainClient, connect_web3, load_deployment
from activities.charter_chain import CharterChain, read_charter_file
from activities.http import open_http
from westworld.charter import Charter, charter_hash
from westworld.charter_sync import CHARTER_JOB, CharterSyncState, series_problem
from westworld.errors import DemoTimeout, PermanentError
from westworld.keys import CHARTER_SYNC_ID
from workers.client import connect
from workers.demo.charter_rights import run_rights_demo
from workers.settings import Settings

Echo = Callable[[str], None]


async def _wait_in_force(s: Settings, version: int, timeout: float = 120.0) -> CharterSyncState:
    client = await connect(s)
    handle = client.get_workflow_handle(CHARTER_SYNC_ID)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            state: CharterSyncState = await handle.query("state", result_type=CharterSyncState)
            if state.applied_version == version:
                return state
        except Exception:  # not started yet: `up` starts it
            state = CharterSyncState()
        if asyncio.get_running_loop().time() > deadline:
            raise DemoTimeout(f"the charter sync did not put version {version} in force within {timeout:.0f} s "
                              f"(last state: {state.model_dump()})")
        if state.polls:
            await handle.signal("sync_now")
        await asyncio.sleep(1.0)


async def run_charter_demo(s: Settings, echo: Echo) -> None:
    charter = await _chain_and_adversary(s, echo)
    await run_rights_demo(s, charter, echo)


async def _chain_and_adversary(s: Settings, echo: Echo) -> Charter:
    content, charter = read_charter_file(s.charter_file)
    w3 = connect_web3(s.chain_rpc_url)
    try:
        chain = await CharterChain(ChainClient(w3, load_deployment(s.contracts_file), Account.create(),
                                               dev_time_travel=False)).read()
    finally:
        await w3.provider.disconnect()
    echo(f"Charter {chain.address}: version {chain.version}, sha256 {chain.policy_hash}; {s.charter_file.name} "
         f"hashes to {charter_hash(content)} ({'in force' if chain.policy_hash == charter_hash(content) else 'NOT'})")
    state = await _wait_in_force(s, chain.version)
    for layer in state.layers:
        echo(f"  {layer.layer:7} {layer.state:11} {layer.detail}")
    async with open_http(10) as http:
        before: dict[str, Any] = (await http.get(f"{s.charter_gate_url}/status")).json()
        kernel = before["kernel"]
        echo("kernel filter: " + (f"loaded at tc egress of {kernel['device']}" if kernel["loaded"] else
                                  f"not loaded ({kernel['reason']}); the userspace gate enforces"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshnode.adversary", "--gate", f"{s.charter_gate_host}:{s.charter_gate_udp_port}",
            "--prometheus", s.resolved_prometheus_url.removeprefix("http://"), "--json",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        report = json.loads(out)
        sent = report["sent"]
        echo(f"adversarial node sent {sum(sum(v.values()) for v in sent.values())} datagrams: "
             + ", ".join(f"{k} {sum(v.values())}" for k, v in sent.items())
             + f"; pushes straight at Prometheus answered {sorted(set(report['direct'].values()))}")
        await asyncio.sleep(max(3 * s.prometheus_scrape_interval, 2.0))
        after: dict[str, Any] = (await http.get(f"{s.charter_gate_url}/status")).json()
        answer = await http.get(f"{s.resolved_prometheus_url}/api/v1/series",
                                params={"match[]": f'{{job="{CHARTER_JOB}"}}', "start": "0"})
        series: list[dict[str, str]] = answer.json()["data"]
    problems = [(x, why) for x in series if (why := series_problem(charter, x))]
    if problems:
        raise PermanentError(f"Prometheus holds series outside the charter: {problems[:5]}")
    names = sorted({x["__name__"] for x in series if not x["__name__"].startswith("westworld_charter_")}
                   - {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                      "scrape_samples_post_metric_relabeling", "scrape_series_added"})
    echo(f"Prometheus (job {CHARTER_JOB}): {len(series)} series, none outside the charter; telemetry names: {names}")
    if after["kernel"]["loaded"]:
        stats = after["kernel"]["stats"]
        echo(f"kernel drops: {stats['not_allowed']} not allowed, {stats['malformed']} malformed, "
             f"{stats['oversized']} oversized ({len(after['kernel']['drops_by_name_hash'])} name hashes)")
    gate = {k: v - before["gate"]["dropped"].get(k, 0) for k, v in after["gate"]["dropped"].items()}
    echo(f"gate drops: {({k: v for k, v in gate.items() if v})}; labels stripped "
         f"{after['gate']['stripped_labels'] - before['gate']['stripped_labels']}; the charter sync audits them "
         "(charter.drops) at its next poll")
    state = await _wait_forbidden_case(s)
    if state.violation_cases:
        echo(f"forbidden metrics seen: the charter sync opened violation case {state.violation_cases[-1]} "
             "(source system, sealed to the committee; `westworld charter cases list`)")
    else:
        echo(f"forbidden metrics seen, but no case could be opened: {state.case_problem}")
    return charter


async def _wait_forbidden_case(s: Settings, timeout: float = 60.0) -> CharterSyncState:
    """The sync's next polls audit the drops and open a case for the forbidden names (or say why it cannot)."""
    handle = (await connect(s)).get_workflow_handle(CHARTER_SYNC_ID)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await handle.signal("sync_now")
        state: CharterSyncState = await handle.query("state", result_type=CharterSyncState)
        if state.violation_cases or state.case_problem:
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise DemoTimeout(f"the charter sync opened no case for the forbidden metrics within {timeout:.0f} s")
        await asyncio.sleep(1.0)
