"""The workflow sandbox settings every worker and replayer uses.

Signature checks (EIP-712 recovery) run inside update validators; the Ethereum libraries they use are
deterministic and load native backends lazily, so they are passed through the sandbox instead of re-imported.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = ("eth_account", "eth_keys", "eth_utils", "eth_abi", "eth_typing", "eth_hash", "hexbytes",
               "coincurve", "cytoolz", "toolz", "Crypto", "Cryptodome", "rlp", "ckzg", "bitarray", "parsimonious",
               # Ed25519 checks of peer and guardian signatures (capabilities); a Rust extension that must load once
               "cryptography", "nacl", "pymacaroons")


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
