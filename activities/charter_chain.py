"""The Charter contract on chain: the version and policy hash in force, per-metric flags, audit checkpoints.

Reads go through the project's ``ChainClient`` (the deployment record names the contract); the one write, an
audit-log checkpoint, is idempotent by on-chain state (a head already anchored is not sent again). Amendments are
never written here: they are DAO votes whose calls the timelock executes (`westworld charter propose`).

The helpers at the top read a charter file for the deployment and the CLI (its version, hash and flags).
"""

from __future__ import annotations

from pathlib import Path

from temporalio import activity

from activities.chain import ChainClient
from westworld.chain import CHARTER
from westworld.charter import Charter, charter_hash, load_charter
from westworld.charter_sync import CharterCheckpointInput, CharterMetricRule, CharterOnChain
from westworld.errors import InvalidInput

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHARTER_FILE = REPO / "deploy" / "charter.yaml"
LOCAL_CHARTER_NAME = "local-charter.yaml"  # in the data dir: the shipped charter plus a local committee report key


def read_charter_file(path: Path) -> tuple[bytes, Charter]:
    """The file's bytes and the charter they hold; CharterInvalid lists every problem, InvalidInput if unreadable."""
    try:
        content = path.read_bytes()
    except OSError as err:
        raise InvalidInput(f"cannot read the charter file {path}: {err.strerror}") from err
    return content, load_charter(content, str(path))


def charter_constructor_args(path: Path) -> tuple[int, bytes]:
    """(version, SHA-256 as bytes32) the Charter is deployed with."""
    content, charter = read_charter_file(path)
    return charter.metadata.version, bytes.fromhex(charter_hash(content))


def charter_metric_calls(path: Path) -> list[tuple[str, bool, int]]:
    """(name, consent required, retention days) for each allowed metric: ``Charter.setMetric`` arguments."""
    _, charter = read_charter_file(path)
    return [(m.name, m.consent_required, m.retention_days) for m in charter.spec.metrics]


class CharterChain:
    """Reads the Charter contract and anchors checkpoints, over the project's chain client."""

    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain

    async def read(self) -> CharterOnChain:
        c = self.chain.contract(CHARTER)
        version = int(await self.chain.tx.call(c.functions.version(), "Charter.version"))
        digest = bytes(await c.functions.policyHash().call()).hex()
        rules = []
        for name in await c.functions.metricNames().call():
            allowed, consent, retention = await c.functions.metrics(
                self.chain.w3.keccak(text=str(name))).call()
            rules.append(CharterMetricRule(name=str(name), allowed=bool(allowed), consent_required=bool(consent),
                                           retention_days=int(retention)))
        return CharterOnChain(address=c.address, version=version, policy_hash=digest, metrics=tuple(rules))

    async def anchor_checkpoint(self, size: int, root: str) -> str:
        """Append the audit log's head (``root`` hex); "" when that head is already the latest checkpoint, or when
        the latest is larger (the contract refuses a log that shrinks; the audit verification reports it)."""
        c = self.chain.contract(CHARTER)
        root_bytes = bytes.fromhex(root.removeprefix("0x"))
        if int(await c.functions.checkpointCount().call()) > 0:
            last_size, last_root, _ = await c.functions.latestCheckpoint().call()
            if int(last_size) == size and bytes(last_root) == root_bytes:
                return ""
            if int(last_size) > size:
                return ""
        tx, _, _ = await self.chain.tx.send(c.functions.anchorCheckpoint(size, root_bytes),
                                            f"anchor audit checkpoint {size}")
        return tx


class CharterChainActivities:
    """``charter_on_chain`` (read) and ``charter_anchor_checkpoint``; reverts are permanent, a silent node retries."""

    def __init__(self, chain: CharterChain) -> None:
        self._c = chain

    @activity.defn(name="charter_on_chain")
    async def charter_on_chain(self) -> CharterOnChain:
        """The version, policy hash and per-metric flags the Charter contract holds."""
        return await self._c.read()

    @activity.defn(name="charter_anchor_checkpoint")
    async def charter_anchor_checkpoint(self, inp: CharterCheckpointInput) -> str:
        """Anchor the audit log's head on the Charter (idempotent); the tx hash, "" if already anchored."""
        return await self._c.anchor_checkpoint(inp.size, inp.root)
