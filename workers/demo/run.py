"""`westworld demo`: run the chosen parts' demos in order, each within a time limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

from westworld.errors import DemoTimeout
from workers.demo.capabilities import run_capabilities_demo
from workers.demo.charter import run_charter_demo
from workers.demo.experiments import run_experiments_demo
from workers.demo.governance import run_demo
from workers.demo.shelter import run_shelter_demo
from workers.settings import Settings

Echo = Callable[[str], None]


async def run_demos(s: Settings, parts: list[str], echo: Echo, part_timeout: timedelta = timedelta(minutes=10)) -> None:
    """Run the chosen parts' demos in order (the vote demo first: it funds the voters the others use).

    Each part gets `part_timeout`; one that overruns is stopped and reported with the workflows still running and
    the step each is on, so a hang names itself instead of waiting forever.
    """
    demos = {"vote": run_demo, "experiments": run_experiments_demo, "capabilities": run_capabilities_demo,
             "shelter": run_shelter_demo, "charter": run_charter_demo}
    limit = part_timeout.total_seconds()
    for name in parts:
        echo(f"\n=== demo: {name} ===")
        started = time.monotonic()
        try:
            await asyncio.wait_for(demos[name](s, echo), timeout=limit)
        except Exception as err:
            # The part's cancellation at the limit can surface as the call it interrupted failing (an update's RPC
            # reports WorkflowUpdateRPCTimeoutOrCancelledError): past the limit, that is the timeout too.
            if not isinstance(err, TimeoutError) and time.monotonic() - started < limit:
                raise
            echo(f"=== demo: {name} did not finish within {limit:.0f} s; workflows still running: ===")
            echo(await _running_now(s, part_timeout))
            raise DemoTimeout(f"the {name} demo did not finish within {limit:.0f} s (--part-timeout); "
                              "the workflows it left running are listed above") from None
        echo(f"=== demo: {name} passed in {time.monotonic() - started:.1f} s ===")


async def _running_now(s: Settings, window: timedelta) -> str:
    """What `westworld stuck --older-than 0s` shows, or why it could not be read."""
    from workers.cli.stuck import find_stuck, render

    try:
        return render(await asyncio.wait_for(find_stuck(s, timedelta(0)), timeout=30), "0s")
    except Exception as err:  # the report is best effort: the timeout itself is the error to raise
        return f"(could not list running workflows: {type(err).__name__}: {err})"
