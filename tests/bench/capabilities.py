"""Capabilities benchmark (`python -m tests.bench.capabilities`): each figure as a ratio to a floor measured in
the same run.

1. capability checks/s through the full pure check (parse, HMAC chain, peer discharge, every caveat) ÷ bare
   pymacaroons (deserialize + ``Verifier.verify``) on the same token (a repeated token's parse and chain are
   memoized), and with a new token every check (nothing memoized)
2. checks/s through the store (a SQLite write transaction: halt, revocation, registry, budget window, decision
   row, reservation) ÷ the same bare pymacaroons verify, caller-observed in this process (no Temporal): one
   caller at a time, 50 concurrent callers (group commit), and one caller with a new token every check (the
   token's parse and HMAC chain not memoized); alternating rounds, the ratio the median of the rounds' ratios
3. the latency an agent action pays for the check: a workflow calling the check activity vs the same workflow
   calling a no-op activity (p50/p99, same Temporal dev server and worker); and the whole AgentActionWorkflow
   (check, settle, audit) for reference
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nacl.signing import SigningKey
from pymacaroons import Macaroon, Verifier
from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.capabilities import CapabilityActivities
from activities.sql.audit_log import AuditLog
from activities.sql.capability_store import CapabilityStore, load_or_create_kek
from activities.sql.database import Database
from tests.bench.capabilities_floor import BareActivityWorkflow, CheckOnlyWorkflow, bench_noop, bench_policy
from tests.bench.lifecycle import stop_on_signals
from westworld import capability as cap
from westworld import caveats as cv
from westworld import discharge as dc
from westworld.agents import AgentActionInput, CapabilityCheckInput, CapabilityDirectory, SealingKey
from westworld.keys import SEARCH_ATTRIBUTES
from westworld.sandbox import MeshAction
from workers.cli.agent_common import seal_action
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.interceptors import TypedFailureInterceptor
from workers.stack import processes
from workflows.agent_action import AgentActionWorkflow
from workflows.runner_sandbox import workflow_runner

KEY = bytes(range(32))
NOW = datetime.now(UTC)
LINES = ["affects_nodes_le = 20", "affects_network_pct_le = 5.0", "valid_until = 2099-01-01T00:00:00Z",
         "regions = eu,us", "budget = 500/3600s"]


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


def pure_figures(seconds: float) -> None:
    peer = SigningKey(bytes(range(100, 132)))
    ident = cap.TokenIdentity(key_id="k1", token_id="t1", agent_id="router", epoch=0)
    plain = cap.attenuate(cap.mint(KEY, ident, ["set_version"]), LINES)
    token = dc.add_peer_caveat(plain, "peer-a", bytes(peer.verify_key), "ok", bytes(32), bytes(range(32)),
                               bytes(24), bytes(24))
    digest = bytes(range(32))  # the action's digest: a discharge is bound to one action, briefly
    discharge = dc.discharge(token, "peer-a", bytes(peer), [], action_digest=digest,
                             valid_until=NOW + timedelta(minutes=10))
    facts = cv.Facts(action="set_version", targets=[cv.Target(node_id=f"n{i}", region="eu") for i in range(10)],
                     live_nodes=1000, now=NOW, window_usage={3600: 10}, action_digest=digest.hex())
    state = cap.CheckState(live_nodes=1000, now=NOW)

    def bare(tok: str, ds: list[str]) -> Callable[[], object]:
        def run() -> object:
            v = Verifier()
            v.satisfy_general(lambda _p: True)
            return v.verify(Macaroon.deserialize(tok), KEY, [Macaroon.deserialize(d) for d in ds])
        return run

    print("\n== 1. full capability check vs bare pymacaroons verify (same token, same process) ==")
    print("   (5 alternating rounds each; the ratio is the median of the rounds' ratios)")
    fresh = [cap.attenuate(cap.mint(KEY, ident.model_copy(update={"token_id": f"t{i}"}), ["set_version"]), LINES)
             for i in range(4 * cap.MEMO_ENTRIES)]
    cycle = itertools.cycle(fresh)
    for name, tok, ds, full in (
            ("5 caveats", plain, [], _full(plain, [], state, facts)),
            ("5 caveats + peer discharge", token, [discharge], _full(token, [discharge], state, facts)),
            ("5 caveats, new token each", plain, [], lambda: cap.check_token(next(cycle), [], KEY, state, "router",
                                                                               facts))):
        assert cap.check_token(tok, ds, KEY, state, "router", facts).allowed
        floors, fulls = [], []
        for _ in range(5):
            floors.append(rate(bare(tok, ds), seconds / 5))
            fulls.append(rate(full, seconds / 5))
        ratio = statistics.median(f / b for f, b in zip(fulls, floors, strict=True))
        print(f"{name:28} bare verify {statistics.median(floors):9.0f}/s   full check "
              f"{statistics.median(fulls):9.0f}/s   ratio {ratio:5.2f}")


def _full(tok: str, ds: list[str], state: cap.CheckState, facts: cv.Facts) -> Callable[[], object]:
    return lambda: cap.check_token(tok, ds, KEY, state, "router", facts)


async def store_figure(work: Path, seconds: float) -> tuple[CapabilityStore, Database, str, list[str]]:
    db = Database(f"sqlite+aiosqlite:///{work / 'bench.db'}")
    await db.migrate()
    store = CapabilityStore(db, load_or_create_kek(work / "kek.key"))
    await store.rotate_key(NOW)
    nodes = [f"n{i:04d}" for i in range(1000)]
    for i, node in enumerate(nodes):
        await store.add_node(node, "eu" if i % 2 else "us", None, NOW)
    lines = ["affects_nodes_le = 20", "regions = eu,us", "budget = 1000000/3600s"]
    token = cap.attenuate(await store.mint("bench", ["set_version"]), lines)
    key_id, root_key = await store.active_key()
    cold = [cap.attenuate(cap.mint(root_key, cap.TokenIdentity(key_id=key_id, token_id=f"cold{i}", agent_id="bench",
                                                               epoch=0), ["set_version"]), lines)
            for i in range(4 * cap.MEMO_ENTRIES)]  # cycled: each is out of the memo when its turn comes again
    rounds = 3
    figures: dict[str, list[tuple[float, float]]] = {"one caller": [], "50 concurrent callers": [],
                                                     "one caller, new token each check": []}
    for _ in range(rounds):
        for name, callers, tokens in (("one caller", 1, [token]), ("50 concurrent callers", 50, [token]),
                                      ("one caller, new token each check", 1, cold)):
            floor = rate(lambda: _bare(token, root_key), seconds / rounds / 2)
            figures[name].append((floor, await store_rate(store, tokens, nodes, callers, seconds / rounds / 2)))
    print("\n== 2. store-backed check (SQLite transaction + budget window + reservation), caller-observed "
          "in-process ==")
    print(f"   ({rounds} alternating rounds; each ratio is the median of the rounds' store rate / bare verify rate)")
    for name, pairs in figures.items():
        ratio = statistics.median(full / floor for floor, full in pairs)
        print(f"{name:34} bare verify {statistics.median(f for f, _ in pairs):9.0f}/s   store check "
              f"{statistics.median(c for _, c in pairs):9.1f}/s   ratio {ratio:7.4f}")
    return store, db, token, nodes


async def store_rate(store: CapabilityStore, tokens: list[str], nodes: list[str], callers: int,
                     seconds: float) -> float:
    """Checks per second through ``store.check`` with ``callers`` concurrent callers, each allowed."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            i = done
            done += 1
            out = await store.check(CapabilityCheckInput(
                action_id=uuid.uuid4().hex, agent_id="bench", token=tokens[i % len(tokens)], action="set_version",
                node_ids=nodes[i % 900:i % 900 + 5]), datetime.now(UTC))
            assert out.result.allowed, out.result

    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - start)


def _bare(token: str, key: bytes) -> object:
    v = Verifier()
    v.satisfy_general(lambda _p: True)
    return v.verify(Macaroon.deserialize(token), key)


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1]


async def timed(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def latency_figures(work: Path, store: CapabilityStore, db: Database, token: str, nodes: list[str],
                          n: int) -> None:
    port = processes.free_port()
    log = work / "temporal.log"
    proc = processes.spawn(processes.temporal_args(
        db_file=work / "temporal.db", port=port, ui_port=None, http_port=processes.free_port(),
        metrics_port=processes.free_port(), search_attributes=SEARCH_ATTRIBUTES), log)
    try:
        processes.wait_for_port(proc, port, "Temporal", log)
        create_keyring(work / "codec-keys.json")
        client = await Client.connect(f"127.0.0.1:{port}",
                                      data_converter=build_data_converter(load_keyring(work / "codec-keys.json")))
        tq = str(uuid.uuid4())
        acts = [*CapabilityActivities(store).all(), AuditActivities(AuditLog(db)).append_audit, bench_noop,
                bench_policy]
        key_id, _private, public = await store.sealing_key(datetime.now(UTC))
        sealing = CapabilityDirectory(sealing_key=SealingKey(key_id=key_id, public_key=public))
        async with Worker(client, task_queue=tq, workflows=[BareActivityWorkflow, CheckOnlyWorkflow,
                                                            AgentActionWorkflow],
                          activities=acts, workflow_runner=workflow_runner(),
                          interceptors=[TypedFailureInterceptor()]):
            async def bare(i: int) -> object:
                return await client.execute_workflow(BareActivityWorkflow.run, str(i), id=f"bare-{uuid.uuid4()}",
                                                     task_queue=tq)

            async def check(i: int) -> object:
                inp = CapabilityCheckInput(action_id=uuid.uuid4().hex, agent_id="bench", token=token,
                                           action="set_version", node_ids=nodes[i % 900:i % 900 + 5])
                return await client.execute_workflow(CheckOnlyWorkflow.run, inp, id=f"chk-{uuid.uuid4()}",
                                                     task_queue=tq)

            async def action(i: int) -> object:
                inp = seal_action(AgentActionInput(
                    agent_id="bench", action_id=uuid.uuid4().hex[:12], token="-", action=MeshAction.SET_VERSION,
                    node_ids=nodes[i % 900:i % 900 + 5], version="2.0"), token, sealing)  # sealed, as clients do
                return await client.execute_workflow(AgentActionWorkflow.run, inp,
                                                     id=f"agent-action:bench:{inp.action_id}", task_queue=tq)

            await bare(0), await check(0), await action(0)  # warm up
            floor, checked, whole = await timed(n, bare), await timed(n, check), await timed(n, action)
        print(f"\n== 3. latency an agent action pays for the check ({n} sequential workflows each) ==")
        for name, lat in (("floor: 1 no-op activity", floor), ("1 check activity", checked),
                          ("AgentActionWorkflow", whole)):
            print(f"{name:26} p50 {pct(lat, 50) * 1e3:7.1f} ms   p99 {pct(lat, 99) * 1e3:7.1f} ms   "
                  f"ratio p50 {pct(lat, 50) / pct(floor, 50):5.2f}")
        print(f"added by the check: {(pct(checked, 50) - pct(floor, 50)) * 1e3:.1f} ms at p50 "
              f"(AgentActionWorkflow = load_policy + check, the sealed token opened and claimed, + settle + audit; "
              f"decision only)")
    finally:
        processes.stop(proc)


async def bench(args: argparse.Namespace, work: Path) -> None:
    pure_figures(args.seconds)
    store, db, token, nodes = await store_figure(work, args.seconds)
    try:
        await latency_figures(work, store, db, token, nodes, args.actions)
    finally:
        store.close()
        await db.close()


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="python -m tests.bench.capabilities", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput figure")
    parser.add_argument("--actions", type=int, default=100, help="workflows per latency figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="westworld-bench-cap-") as work:
        asyncio.run(bench(args, Path(work)))


if __name__ == "__main__":
    main()
