"""Fifty agent actions race one budget on a real Temporal server, served by two workers with stores (and caches)
of their own over one database: the budget is never exceeded, and exactly what fits is allowed."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from tests.workflows.capabilities_support import ActionHandle, directory, network, start_action
from tests.workflows.conftest import Harness
from tests.workflows.test_agent_action import action
from westworld import capability as cap
from workers.cli.agent_common import seal_action
from workers.worker import build_worker, open_resources

RACERS = 50
NODES_EACH = 3
BUDGET = 30  # distinct nodes per hour: 10 of the 50 actions fit
SECOND = "budget-race-second-worker"


async def test_fifty_actions_racing_one_budget_never_exceed_it(harness: Harness) -> None:
    net = await network(harness, 400)
    token = cap.attenuate(await net.store.mint("swarm", ["set_version"]), [f"budget = {BUDGET}/3600s"])
    sealing = await directory(harness)
    inputs = [seal_action(action("swarm", token, net.nodes[i * NODES_EACH:(i + 1) * NODES_EACH]), token, sealing)
              for i in range(RACERS)]
    client = await Client.connect(harness.settings.temporal_address, identity=SECOND,
                                  data_converter=harness.client.data_converter)
    async with contextlib.AsyncExitStack() as stack:
        second = await stack.enter_async_context(open_resources(harness.settings))  # its own store and caches
        await stack.enter_async_context(build_worker(client, second, harness.task_queue))
        handles = await asyncio.gather(*(start_action(harness, inp) for inp in inputs))
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=240)
    allowed = [inp for inp, res in zip(inputs, results, strict=True) if res.allowed]
    denied = [res for res in results if not res.allowed]
    touched = {n for inp in allowed for n in inp.node_ids}
    assert len(touched) <= BUDGET
    assert len(allowed) == BUDGET // NODES_EACH, [r.reason for r in denied]
    assert {r.caveat for r in denied} == {f"budget = {BUDGET}/3600s"}
    assert await net.store.usage_in_window("swarm", datetime.now(UTC) - timedelta(hours=1)) == len(touched)
    deciders = await asyncio.gather(*(check_identity(h) for h in handles))
    assert set(deciders) == {harness.client.identity, SECOND}, deciders  # both workers' stores decided


async def check_identity(handle: ActionHandle) -> str:
    """The identity of the worker whose check_capability activity decided this action."""
    scheduled: set[int] = set()
    async for event in handle.fetch_history_events():
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and attrs.activity_type.name == \
                "check_capability":
            scheduled.add(event.event_id)
        started = event.activity_task_started_event_attributes
        if event.HasField("activity_task_started_event_attributes") and started.scheduled_event_id in scheduled:
            return str(started.identity)
    raise AssertionError(f"{handle.id}: no check_capability activity in its history")
