"""The local stack's violation-report committee key, made at deploy time.

The shipped charter (``deploy/charter.yaml``) names the 15 committee members (the local chain's first 15
mnemonic accounts) but no ``reports.committee_public_key``: a real committee makes its X25519 key pair itself and
the DAO puts the public half on chain by an amendment. For the local stack `westworld up` does the simplest honest
thing instead, once, before it deploys the Charter: it makes the pair (private half in
``<data dir>/charter-committee.key``, mode 0600 — the whole local committee's key, held by the operator of this
machine), writes ``<data dir>/local-charter.yaml`` (the shipped charter plus that public key, same version), and the
Charter is deployed at that file's hash. The settings pick that file when no other charter is set
(``Settings._local_charter``), so the worker, the gate and the CLI all read it.

A data dir whose Charter is already on chain at the shipped file's hash keeps the shipped file: switching would make
the sync refuse the file in force (its hash would not be on chain). There, the key comes by an amendment (`westworld
charter propose` and a DAO vote), as for a real committee.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from nacl.public import PrivateKey

from activities.chain_tx import load_deployment
from activities.charter_chain import DEFAULT_CHARTER_FILE, LOCAL_CHARTER_NAME
from westworld.chain import CHARTER
from westworld.charter import load_charter
from workers.settings import Settings

COMMITTEE_KEY_NAME = "charter-committee.key"


def committee_key_file(s: Settings) -> Path:
    return s.data_dir / COMMITTEE_KEY_NAME


def committee_key(s: Settings) -> PrivateKey:
    """The local committee's X25519 report key (made by `westworld up`)."""
    return PrivateKey(bytes.fromhex(committee_key_file(s).read_text().strip()))


def _charter_deployed(s: Settings) -> bool:
    if not s.contracts_file.exists():
        return False
    return CHARTER in load_deployment(s.contracts_file, s.chain_rpc_url).addresses


def ensure_local_charter(s: Settings) -> tuple[Settings, bool]:
    """The settings with the data dir's charter (made now if it may be), and whether it was made now."""
    local = s.data_dir / LOCAL_CHARTER_NAME
    if s.charter_file != DEFAULT_CHARTER_FILE:  # the operator's own charter, or already the local one
        return s, False
    if local.is_file():
        return s.model_copy(update={"charter_file": local}), False
    if _charter_deployed(s):
        return s, False
    return s.model_copy(update={"charter_file": write_local_charter(s.data_dir)}), True


def write_local_charter(data_dir: Path, version: int | None = None) -> Path:
    """Make the committee key pair and ``<data_dir>/local-charter.yaml`` (the shipped charter, at ``version`` if
    given, plus the public key); validated before it is written."""
    key = PrivateKey.generate()
    fd = os.open(data_dir / COMMITTEE_KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    data = yaml.safe_load(DEFAULT_CHARTER_FILE.read_bytes())
    if version is not None:
        data["metadata"]["version"] = version
    data["spec"].setdefault("reports", {})["committee_public_key"] = bytes(key.public_key).hex()
    local = data_dir / LOCAL_CHARTER_NAME
    text = ("# Made by `westworld up` (workers/stack/committee.py): deploy/charter.yaml plus this machine's local\n"
            "# committee report key; the Charter on the local chain holds this file's hash.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    load_charter(text.encode(), str(local))  # refuses now, not at the sync, if it did not validate
    staged = local.with_suffix(".tmp")
    staged.write_text(text)
    staged.replace(local)
    return local
