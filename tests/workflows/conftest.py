"""A real worker (all activities against real anvil and SQLite) on a per-test task queue."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client
from temporalio.testing._timeskipping import TimeSkipper, TimeSkippingConfig

from activities.chain import save_deployment
from activities.chain_deploy import distribute_voting_power
from tests.fixtures.polling import eventually
from westworld.chain import Deployment
from workers.codec import build_data_converter, create_keyring, load_keyring
from workers.metrics import Metrics
from workers.settings import ANVIL_DEV_KEY, Settings
from workers.worker import Resources, build_worker, open_resources

__all__ = ["TOKEN", "Harness", "eventually"]  # eventually: the workflow tests import it from here

TOKEN = 10**18
REPLAY_DIR = Path(__file__).parents[1] / "replay" / "histories"


@dataclass
class Harness:
    client: Client
    skipper: TimeSkipper
    task_queue: str
    settings: Settings
    resources: Resources
    voters: list[LocalAccount]
    metrics: Metrics


@pytest.fixture(scope="session")
async def funded_voters(deployment: Deployment, anvil_url: str) -> list[LocalAccount]:
    """Thirty voters with self-delegated power (voter i holds (i + 1) * 10 tokens), then a whale with half the
    supply (the last in the list)."""
    voters = [Account.create(f"voter-{i}") for i in range(31)]
    holders = {a.key.hex(): (i + 1) * 10 * TOKEN for i, a in enumerate(voters[:30])}
    holders[voters[30].key.hex()] = 500_000 * TOKEN
    await distribute_voting_power(anvil_url, deployment, holders, ANVIL_DEV_KEY)
    return voters


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra worker settings; a test module overrides this fixture to point the worker elsewhere."""
    return {}


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest, settings_overrides: dict[str, Any],
    tmp_path: Path, temporal_address: str, anvil_url: str, deployment: Deployment, funded_voters: list[LocalAccount]
) -> AsyncIterator[Harness]:
    settings = Settings(data_dir=tmp_path, temporal_address=temporal_address, chain_rpc_url=anvil_url,
                        **settings_overrides)
    save_deployment(settings.contracts_file, deployment)
    create_keyring(settings.resolved_codec_key_file)
    client = await Client.connect(
        temporal_address, data_converter=build_data_converter(load_keyring(settings.resolved_codec_key_file))
    )
    task_queue = str(uuid.uuid4())
    async with open_resources(settings) as res:
        metrics = Metrics()
        worker = build_worker(client, res, task_queue, metrics)
        async with worker:
            h = Harness(
                client=client,
                skipper=TimeSkipper(client, config=TimeSkippingConfig(enabled=False)),
                task_queue=task_queue,
                settings=settings,
                resources=res,
                voters=funded_voters,
                metrics=metrics,
            )
            yield h
            if os.environ.get("WESTWORLD_RECORD_HISTORIES"):
                await asyncio.sleep(1)  # visibility catches up with the closed runs
                await record_histories(h, request.node.name)


async def record_histories(h: Harness, test_name: str) -> None:
    """Save the closed workflows' histories (and their key ring) as replay fixtures."""
    async for wf in h.client.list_workflows(f'TaskQueue = "{h.task_queue}" AND ExecutionStatus != "Running"'):
        history = await h.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        stem = f"{wf.workflow_type}--{test_name}--{wf.run_id[:8]}"
        (REPLAY_DIR / f"{stem}.history.json").write_text(history.to_json())
        shutil.copy(h.settings.resolved_codec_key_file, REPLAY_DIR / f"{stem}.keyring.json")


