"""The people every part's demo shares: five voters (EIP-712 keys) and the operator's and demo guardians'
signing keys, made once and kept in the data dir."""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import Client

from westworld import peers
from westworld.agents import AdminChange
from westworld.errors import UNAUTHORISED, Refused
from workers.cli import agent_ops as ops
from workers.settings import Settings
from workers.stack import standing
from workers.wiring.capabilities import operator_key_file


def demo_voters(keys_dir: Path) -> dict[str, LocalAccount]:
    """Five voter keys, made once and kept (mode 0600) so `westworld vote cast --key` can use them."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    voters = {}
    for i in range(1, 6):
        path = keys_dir / f"voter-{i}.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(Account.create().key.hex())
        voters[f"voter-{i}"] = Account.from_key(path.read_text().strip())
    return voters


def demo_key(s: Settings, name: str) -> bytes:
    path = ops.keys_dir(s) / f"{name}.key"
    if not path.exists():
        standing.new_keypair(path)
    return ops.read_private_key(path)


class Signers:
    """The demo's signing keys: the operator's, and the demo guardians' once registered."""

    def __init__(self, s: Settings, client: Client) -> None:
        self.s, self.client = s, client
        self.operator = ops.read_private_key(operator_key_file(s))
        self.guardians = {f"demo-guardian-{i}": demo_key(s, f"demo-guardian-{i}") for i in range(3)}

    async def admin(self, change: AdminChange) -> str:
        """``change`` signed by the operator; if it needs guardians (after genesis), by the demo guardians."""
        try:
            return (await ops.admin(self.client, self.s, change, [self.operator])).detail
        except Refused as err:
            if err.type != UNAUTHORISED or "guardians" not in err.message:
                raise
        registered = (await ops.registries(self.client, self.s)).guardians
        keys = [k for gid, k in self.guardians.items() if registered.get(gid) == peers.public_key_of(k)]
        return (await ops.admin(self.client, self.s, change, keys)).detail

    async def mint(self, agent: str, actions: list[str]) -> str:
        return await ops.mint(self.client, self.s, agent, actions, [self.operator])
