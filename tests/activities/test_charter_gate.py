"""The charter gate over real UDP and a real HTTP scrape: what a node sends, what Prometheus would read."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from activities.charter_gate import CharterGate, RunningGate, serve
from westworld.charter import load_charter, pseudonym

CHARTER = load_charter((Path(__file__).resolve().parents[2] / "deploy" / "charter.yaml").read_bytes())
KEY = bytes(range(32))
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


@pytest.fixture
async def running() -> AsyncIterator[RunningGate]:
    gate = CharterGate(CHARTER.whitelist(), KEY, consents=[(ALICE, "mesh_user_session_seconds")])
    rg = await serve(gate)
    try:
        yield rg
    finally:
        await rg.close()


async def send(rg: RunningGate, datagrams: list[bytes]) -> None:
    before = rg.gate.counters.kept + sum(rg.gate.counters.dropped.values())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", rg.udp_port))
    expected = before + len(datagrams)
    for _ in range(100):  # the gate counts every datagram it received (kept lines + drops)
        c = rg.gate.counters
        if c.kept + sum(c.dropped.values()) >= expected:
            return
        await asyncio.sleep(0.02)


async def scrape(rg: RunningGate) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{rg.http_port}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def series(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


async def test_only_the_charter_reaches_the_scrape(running: RunningGate) -> None:
    await send(running, [
        b"mesh_link_quality:0.93|g|#node:n1,peer:n2,ip_address:10.0.0.7",  # kept, ip_address stripped
        b"user_location:48.85|g|#user:" + ALICE.encode(),  # blocked
        b"Mesh_link_quality:0.5|g|#node:n1",  # upper case: refused, not lowered
        "mesh_link_quаlity:0.5|g".encode(),  # Cyrillic a
        b"mesh_wifi_ssid:1|g",  # not in the charter
        b"mesh_user_session_seconds:30|g|#node:n1,user:" + ALICE.encode(),  # consented
        b"mesh_user_session_seconds:40|g|#node:n1,user:" + BOB.encode(),  # no consent
        b"mesh_user_session_seconds:40|g|#node:n1",  # names no subject
        b"mesh_link_quality:" + b"9" * 1100 + b"|g",  # oversized
        b"mesh_link_quality 0.9",  # malformed
    ])
    text = await scrape(running)
    got = series(text)
    n1, n2 = pseudonym(KEY, 1, "node", "n1"), pseudonym(KEY, 1, "peer", "n2")
    alice = pseudonym(KEY, 1, "user", ALICE)
    assert got[f'mesh_link_quality{{node="{n1}",peer="{n2}"}}'] == "0.93"
    assert got[f'mesh_user_session_seconds{{node="{n1}",user="{alice}"}}'] == "30.0"
    kept = {k for k in got if not k.startswith("westworld_charter_gate_")}
    assert len(kept) == 2
    for secret in ("n1", "10.0.0.7", ALICE.lower(), ALICE, BOB.lower(), "user_location", "ip_address", "wifi"):
        assert secret not in text.replace(n1, "").replace(n2, "").replace(alice, "")
    assert got['westworld_charter_gate_dropped_total{reason="blocked"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="malformed_name"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="not_ascii"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="not_whitelisted"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="no_consent"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="no_subject"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="oversized"}'] == "1"
    assert got['westworld_charter_gate_dropped_total{reason="malformed_line"}'] == "1"
    assert got["westworld_charter_gate_stripped_labels_total"] == "1"


async def test_withdrawal_purges_and_stops_collection(running: RunningGate) -> None:
    line = b"mesh_user_session_seconds:30|g|#node:n1,user:" + ALICE.encode()
    await send(running, [line])
    alice = pseudonym(KEY, 1, "user", ALICE)
    assert alice in await scrape(running)
    assert running.gate.withdraw(ALICE.upper().replace("0X", "0x"), "mesh_user_session_seconds") == 1
    assert alice not in await scrape(running)
    await send(running, [line])
    text = await scrape(running)
    assert alice not in text
    assert series(text)['westworld_charter_gate_dropped_total{reason="no_consent"}'] == "1"


async def test_a_multi_line_datagram_is_judged_line_by_line(running: RunningGate) -> None:
    await send(running, [b"mesh_node_uptime_seconds:5|g|#node:n9\nuser_location:1|g\nmesh_throughput_bytes:7|c"])
    got = series(await scrape(running))
    assert got[f'mesh_node_uptime_seconds{{node="{pseudonym(KEY, 1, "node", "n9")}"}}'] == "5.0"
    assert got["mesh_throughput_bytes"] == "7.0"
    assert got['westworld_charter_gate_dropped_total{reason="blocked"}'] == "1"


def test_a_short_key_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(Exception, match="at least 32 bytes"):
        CharterGate(CHARTER.whitelist(), b"short")
    assert KEY.hex() not in repr(CharterGate(CHARTER.whitelist(), KEY))
