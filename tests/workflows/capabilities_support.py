"""Helpers shared by the capability workflow tests: a registered network, peers and guardians with real keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import WorkflowHandle

from activities.capability_store import CapabilityStore
from tests.workflows.conftest import Harness
from westworld import peers
from westworld.agents import AgentActionInput, AgentActionResult
from workers.capabilities_wiring import open_store
from workflows.agent_action import AgentActionWorkflow

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


async def start_action(h: Harness, inp: AgentActionInput) -> ActionHandle:
    return await h.skipper.client.start_workflow(
        AgentActionWorkflow.run, inp, id=f"agent-action:{inp.agent_id}:{inp.action_id}", task_queue=h.task_queue)
