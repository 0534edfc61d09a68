"""Key ceremony against a real SQLite database: an epoch's shares open only for their guardian, any k of them
give the master private key back, and nothing stored holds key material."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.shelter_keys import ShelterKeyActivities, create_epoch
from activities.sql.database import Database
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.postgres import fresh_database
from westworld import envelope, shamir
from westworld.errors import DecryptFailed
from westworld.shelter import CreateEpochInput, Guardian, KeyEpoch, share_aad


def make_guardians(n: int) -> tuple[list[Guardian], dict[str, bytes]]:
    guardians, privates = [], {}
    for i in range(n):
        priv = secrets.token_bytes(32)
        gid = f"guardian-{i}"
        privates[gid] = priv
        guardians.append(Guardian(id=gid, encryption_public_key=envelope.public_key(priv).hex(),
                                  signing_public_key=secrets.token_bytes(32).hex()))
    return guardians, privates


def open_share(epoch: KeyEpoch, gid: str, priv: bytes) -> shamir.Share:
    enc = epoch.share_of(gid)
    assert enc is not None
    value = envelope.open_sealed(priv, enc.sealed, share_aad(epoch.epoch, gid, enc.index))
    return shamir.Share(index=enc.index, value=value)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'westworld.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of each kind (the PostgreSQL server is shared by the session; its tables reset)."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    database = await fresh_database(url)
    yield database
    await database.close()


async def test_epoch_shares_reconstruct_the_master_key_and_only_their_guardian_opens_them(
    db: Database, tmp_path: Path
) -> None:
    acts = ShelterKeyActivities(db)
    guardians, privates = make_guardians(10)
    env = InterceptedEnvironment()
    epoch = await env.run(acts.create_key_epoch, CreateEpochInput(guardians=guardians))
    assert (epoch.epoch, epoch.threshold, len(epoch.shares)) == (1, 3, 10)
    shares = [open_share(epoch, g.id, privates[g.id]) for g in guardians]
    shamir.check_shares(shares, epoch.commitments(), bytes.fromhex(epoch.salt))
    for group in (shares[:3], shares[7:], [shares[0], shares[4], shares[9]]):
        master = shamir.combine(group, threshold=3)
        assert envelope.public_key(master).hex() == epoch.master_public_key
    assert envelope.public_key(shamir.combine(shares[:2])).hex() != epoch.master_public_key
    # guardian 1 cannot open guardian 0's share, nor replay it as its own
    enc0 = epoch.share_of("guardian-0")
    assert enc0 is not None
    with pytest.raises(DecryptFailed):
        envelope.open_sealed(privates["guardian-1"], enc0.sealed, share_aad(1, "guardian-0", enc0.index))
    with pytest.raises(DecryptFailed):
        envelope.open_sealed(privates["guardian-0"], enc0.sealed, share_aad(1, "guardian-1", enc0.index))
    # the database file holds no clear share and no master key
    raw = (tmp_path / "westworld.db").read_bytes()
    for s in shares:
        assert s.value not in raw and s.value.hex().encode() not in raw
    assert await env.run(acts.current_key_epoch) == epoch


async def test_epochs_are_numbered_idempotent_by_key_and_retired(any_db: Database) -> None:
    acts = ShelterKeyActivities(any_db)
    env = InterceptedEnvironment()
    guardians, _ = make_guardians(5)
    first = await env.run(acts.create_key_epoch, CreateEpochInput(guardians=guardians, threshold=2,
                                                                  epoch_key="rotation:1"))
    again = await env.run(acts.create_key_epoch, CreateEpochInput(guardians=guardians, threshold=2,
                                                                  epoch_key="rotation:1"))
    assert again == first
    second = await env.run(acts.create_key_epoch, CreateEpochInput(guardians=guardians, epoch_key="rotation:2"))
    assert second.epoch == 2 and second.master_public_key != first.master_public_key
    assert (await env.run(acts.current_key_epoch)).epoch == 2
    await env.run(acts.retire_key_epoch, 2)
    assert (await env.run(acts.current_key_epoch)).epoch == 1
    assert (await env.run(acts.get_key_epoch, 2)).retired
    with pytest.raises(ApplicationError, match="epoch 9 does not exist"):
        await env.run(acts.get_key_epoch, 9)


async def test_no_epoch_yet_says_what_to_do(db: Database) -> None:
    with pytest.raises(ApplicationError, match="run `westworld shelter guardians init` first") as refused:
        await InterceptedEnvironment().run(ShelterKeyActivities(db).current_key_epoch)
    assert refused.value.type == "InvalidInput" and refused.value.non_retryable


def test_bad_epoch_inputs_are_named() -> None:
    guardians, _ = make_guardians(3)
    with pytest.raises(ValueError, match="threshold 4 exceeds the 3 guardians"):
        CreateEpochInput(guardians=guardians, threshold=4)
    with pytest.raises(ValueError, match="guardian id repeated: \\['guardian-0'\\]"):
        CreateEpochInput(threshold=2, guardians=[guardians[0], guardians[0].model_copy(
            update={"encryption_public_key": "ab" * 32, "signing_public_key": "cd" * 32})])


async def test_concurrent_epoch_creations_get_distinct_numbers(any_db: Database) -> None:
    guardians, _ = make_guardians(3)
    store = ShelterKeyActivities(any_db).store
    made = await asyncio.gather(*(create_epoch(store, CreateEpochInput(guardians=guardians, threshold=2))
                                  for _ in range(4)))
    assert sorted(e.epoch for e in made) == [1, 2, 3, 4]
    assert len({e.master_public_key for e in made}) == 4
