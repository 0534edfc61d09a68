"""Loading the network policy: the file the operator points at, accepted only if its hash is the one on chain.

The policy decides quorum floors, peer thresholds and the watch's limits (``westworld/policy.py``). A worker must
never enforce a policy the DAO did not set, so ``load_policy`` refuses (non-retryable, naming both hashes) a file
whose canonical hash differs from ``MeshConfig.parameters("policy.sha256")``; the workflows read the policy
through this activity only.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from temporalio import activity

from activities.chain import ChainClient
from westworld.documents import LIMITS, load_document, out_of_range
from westworld.errors import POLICY_INVALID, POLICY_MISMATCH, InvalidInput, PermanentError
from westworld.policy import POLICY_HASH_KEY, NetworkPolicy, policy_hash

DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "deploy" / "policy.yaml"


def read_policy_file(path: Path) -> NetworkPolicy:
    """Parse and validate a policy file (YAML or JSON, through the safe loader: UTF-8, size, aliases, depth,
    duplicate keys); ValueError naming the file and every problem."""
    try:
        with path.open("rb") as f:
            content = f.read(LIMITS.max_bytes + 1)  # the loader refuses more; never read an endless file whole
    except OSError as err:
        raise ValueError(f"{path}: cannot read the policy: {err.strerror}") from err
    try:
        data = load_document(content, str(path))
    except InvalidInput as err:
        raise ValueError(err.message) from err
    try:
        policy = NetworkPolicy.model_validate(data or {})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: invalid policy: {problems}") from err
    if bad := out_of_range(policy):
        raise ValueError(f"{path}: invalid policy: {'; '.join(bad)}")
    return policy


class PolicyActivities:
    def __init__(self, chain: ChainClient, policy_file: Path) -> None:
        self._chain = chain
        self._file = policy_file

    @activity.defn
    async def load_policy(self) -> NetworkPolicy:
        """The policy in force: the file's, if its hash is the one the DAO put on chain."""
        try:
            policy = read_policy_file(self._file)
        except ValueError as err:
            raise PermanentError(str(err), type=POLICY_INVALID) from err
        on_chain = (await self._chain.read_parameter(POLICY_HASH_KEY)).removeprefix("0x").lower()
        mine = policy_hash(policy)
        if on_chain != mine:
            raise PermanentError(
                f"{self._file}: policy hash {mine} is not the one on chain (MeshConfig {POLICY_HASH_KEY} = "
                f"{on_chain or 'unset'}); a policy takes effect only through a DAO vote that sets its hash",
                type=POLICY_MISMATCH)
        return policy
