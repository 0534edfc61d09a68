"""`westworld up`'s local report committee (workers/stack/committee.py): a fresh data dir gets the committee key and
``local-charter.yaml`` (the shipped charter plus the public key), which the settings then pick; an operator's own
charter file is left alone, and so is a data dir whose Charter is already on chain at the shipped file."""

from __future__ import annotations

import stat
from pathlib import Path

from nacl.public import PrivateKey, SealedBox

from activities.chain_tx import save_deployment
from activities.charter_chain import DEFAULT_CHARTER_FILE, LOCAL_CHARTER_NAME
from westworld.chain import CHARTER, Deployment
from westworld.charter import load_charter
from workers.settings import Settings
from workers.stack.committee import committee_key, committee_key_file, ensure_local_charter


def test_a_fresh_data_dir_gets_the_committee_key_and_the_settings_pick_it(tmp_path: Path) -> None:
    s, made = ensure_local_charter(Settings(data_dir=tmp_path))
    assert made and s.charter_file == tmp_path / LOCAL_CHARTER_NAME
    assert stat.S_IMODE(committee_key_file(s).stat().st_mode) == 0o600
    local = load_charter(s.charter_file.read_bytes())
    shipped = load_charter(DEFAULT_CHARTER_FILE.read_bytes())
    assert local.metadata.version == shipped.metadata.version and local.spec.committee == shipped.spec.committee
    public = local.spec.reports.committee_public_key
    assert public == bytes(committee_key(s).public_key).hex()
    sealed = SealedBox(PrivateKey(bytes(committee_key(s))).public_key).encrypt(b"report")
    assert SealedBox(committee_key(s)).decrypt(sealed) == b"report"
    assert Settings(data_dir=tmp_path).charter_file == s.charter_file  # every later process reads the same file
    again, made_again = ensure_local_charter(Settings(data_dir=tmp_path))
    assert not made_again and again.charter_file.read_bytes() == s.charter_file.read_bytes()  # kept, not remade


def test_an_operators_charter_or_a_deployed_one_is_left_alone(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_bytes(DEFAULT_CHARTER_FILE.read_bytes())
    s, made = ensure_local_charter(Settings(data_dir=tmp_path, charter_file=own))
    assert not made and s.charter_file == own and not (tmp_path / LOCAL_CHARTER_NAME).exists()
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    save_deployment(deployed / "contracts.json", Deployment(  # a Charter already on chain at the shipped file
        chain_id=31337, deployer="0x" + "22" * 20, addresses={CHARTER: "0x" + "11" * 20}, abis={}, timelock_delay=20,
        governors={}))
    s, made = ensure_local_charter(Settings(data_dir=deployed))
    assert not made and s.charter_file == DEFAULT_CHARTER_FILE and not committee_key_file(s).exists()
