"""Helpers shared by the capability workflow tests: a registered network, peers and guardians with real keys, and
tokens sealed to the harness's worker the way the CLI and SDK seal them (westworld/sealed.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import WorkflowHandle

from activities.sql.capability_store import CapabilityStore
from tests.workflows.conftest import Harness
from westworld import peers
from westworld import sealed as sl
from westworld.agents import AgentActionInput, AgentActionResult, CapabilityDirectory, DirectoryRequest
from westworld.experiment_run import ExperimentInput
from westworld.keys import agent_action_id, canary_id, capability_directory_id, experiment_id
from westworld.rollout import CanaryInput
from workers.cli.agent_common import seal_action, seal_input
from workers.wiring.capabilities import open_store
from workflows.agent_action import AgentActionWorkflow
from workflows.capability_directory import CapabilityDirectoryWorkflow

ActionHandle = WorkflowHandle[AgentActionWorkflow, AgentActionResult]


def new_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass
class Network:
    store: CapabilityStore
    nodes: list[str]
    peer_keys: dict[str, bytes]
    guardian_keys: dict[str, bytes]


async def network(h: Harness, size: int, peers_n: int = 5, guardians_n: int = 3) -> Network:
    """``size`` registered nodes (the first ``peers_n`` also peers with Ed25519 keys), guardians, a root key."""
    store = await open_store(h.settings, h.resources.database)
    now = datetime.now(UTC)
    await store.rotate_key(now)
    tag = uuid.uuid4().hex[:6]
    names = [f"n{tag}-{i:04d}" for i in range(size)]
    keys: dict[str, bytes] = {}
    for i, name in enumerate(names):
        key = new_key() if i < peers_n else None
        if key:
            keys[name] = key
        await store.add_node(name, "eu-west" if i % 2 == 0 else "us-east",
                             peers.public_key_of(key) if key else None, now)
    guardian_keys = {f"guardian-{tag}-{i}": new_key() for i in range(guardians_n)}
    for gid, key in guardian_keys.items():
        await store.add_guardian(gid, peers.public_key_of(key), now)
    return Network(store, names, keys, guardian_keys)


async def directory(h: Harness) -> CapabilityDirectory:
    """The worker's sealing key, asked of the worker through Temporal (as the CLI does)."""
    return await h.client.execute_workflow(CapabilityDirectoryWorkflow.run, DirectoryRequest(),
                                           id=capability_directory_id(uuid.uuid4().hex), task_queue=h.task_queue)


async def start_action(h: Harness, inp: AgentActionInput) -> ActionHandle:
    """Start the action with its token (given in clear in ``inp``) sealed for it; an already sealed one as is."""
    if not sl.is_sealed(inp.token):
        inp = seal_action(inp, inp.token, await directory(h))
    return await h.skipper.client.start_workflow(
        AgentActionWorkflow.run, inp, id=agent_action_id(inp.agent_id, inp.action_id), task_queue=h.task_queue)


async def sealed_canary(h: Harness, inp: CanaryInput) -> CanaryInput:
    assert inp.capability_token is not None
    return seal_input(inp, "capability_token", inp.capability_token, await directory(h), "CanaryRolloutWorkflow",
                      canary_id(inp.name))


async def sealed_experiment(h: Harness, inp: ExperimentInput) -> ExperimentInput:
    assert inp.rollout_capability_token is not None and inp.spec is not None
    return seal_input(inp, "rollout_capability_token", inp.rollout_capability_token, await directory(h),
                      "ExperimentWorkflow", experiment_id(inp.spec['metadata']['name']))
