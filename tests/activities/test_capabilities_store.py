"""The capability store against real databases (a SQLite file and a real PostgreSQL server): the budget across
many small actions and under concurrent races, root keys encrypted at rest and rotated, revocation, halts."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from pymacaroons import Macaroon

from activities.capabilities import CapabilityActivities
from activities.sql.admin_store import AdminStore
from activities.sql.capability_store import CapabilityStore, load_or_create_kek
from activities.sql.database import Database
from activities.sql.schema import cap_root_keys as root_keys
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.postgres import fresh_database
from westworld import capability as cap
from westworld.agents import CapabilityCheckInput, HaltRequest, HaltSet
from westworld.errors import InvalidInput

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    database = await fresh_database(url)
    yield database
    await database.close()


@pytest.fixture
async def store(db: Database, tmp_path: Path) -> CapabilityStore:
    s = CapabilityStore(db, load_or_create_kek(tmp_path / "kek.key"))
    await s.rotate_key(NOW)
    for i in range(100):
        await s.add_node(f"n{i:03d}", "eu" if i < 50 else "us", None, NOW)
    return s


def ask(token: str, nodes: list[str], agent: str = "creeper", action_id: str | None = None) -> CapabilityCheckInput:
    return CapabilityCheckInput(action_id=action_id or uuid.uuid4().hex, agent_id=agent, token=token,
                                action="set_config", node_ids=nodes)


async def test_many_small_actions_exhaust_the_budget(store: CapabilityStore) -> None:
    token = cap.attenuate(await store.mint("creeper", ["set_config"]), ["affects_nodes_le = 2", "budget = 10/3600s"])
    results = [(await store.check(ask(token, [f"n{2 * i:03d}", f"n{2 * i + 1:03d}"]), NOW + timedelta(minutes=i)))
               .result for i in range(8)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    assert results[5].caveat == "budget = 10/3600s"
    assert "would touch 12 distinct nodes within 3600s, over its budget of 10" in results[5].reason
    # the window rolls: an hour after the first actions the budget is free again
    later = await store.check(ask(token, ["n090", "n091"]), NOW + timedelta(hours=1, minutes=5))
    assert later.result.allowed
    assert await store.usage_in_window("creeper", NOW - timedelta(minutes=1)) == 12  # denied actions reserve none


async def test_concurrent_small_actions_cannot_race_past_the_budget(store: CapabilityStore) -> None:
    token = cap.attenuate(await store.mint("swarm", ["set_config"]), ["budget = 30/3600s"])
    asks = [ask(token, [f"n{3 * i:03d}", f"n{3 * i + 1:03d}", f"n{3 * i + 2:03d}"], agent="swarm")
            for i in range(30)]
    outcomes = await asyncio.gather(*(store.check(a, NOW) for a in asks))
    allowed = [o for o in outcomes if o.result.allowed]
    assert len(allowed) == 10, [o.result.reason for o in outcomes]
    assert await store.usage_in_window("swarm", NOW - timedelta(minutes=1)) == 30


async def test_a_repeated_check_answers_with_the_recorded_decision(store: CapabilityStore) -> None:
    token = cap.attenuate(await store.mint("a", ["set_config"]), ["budget = 2/3600s"])
    first = await store.check(ask(token, ["n001", "n002"], agent="a", action_id="same"), NOW)
    again = await store.check(ask(token, ["n001", "n002"], agent="a", action_id="same"), NOW)
    assert first == again and first.result.allowed
    assert await store.usage_in_window("a", NOW - timedelta(minutes=1)) == 2


async def test_settling_confirms_or_releases_the_reservation(store: CapabilityStore) -> None:
    token = cap.attenuate(await store.mint("b", ["set_config"]), ["budget = 4/3600s"])
    await store.check(ask(token, ["n001", "n002", "n003"], agent="b", action_id="x1"), NOW)
    assert not (await store.check(ask(token, ["n004", "n005"], agent="b"), NOW)).result.allowed
    assert await store.settle("x1", confirmed=False, now=NOW) == 3
    assert (await store.check(ask(token, ["n004", "n005"], agent="b"), NOW)).result.allowed


async def test_root_keys_are_encrypted_at_rest_rotated_and_retired(store: CapabilityStore, db: Database,
                                                                   tmp_path: Path) -> None:
    old = await store.mint("r", ["set_config"])
    old_kid = cap.identity_of(old).key_id
    key = store._keys[old_kid]  # the key as the activity holds it in memory
    async with db.engine.connect() as conn:
        sealed = [r.sealed for r in await conn.execute(sa.select(root_keys))]
    assert sealed and all(key.hex() not in s for s in sealed)
    new_kid = await store.rotate_key(NOW + timedelta(seconds=1))
    new = await store.mint("r", ["set_config"])
    assert cap.identity_of(new).key_id == new_kid != old_kid
    assert (await store.check(ask(old, ["n001"], agent="r"), NOW)).result.allowed  # old tokens still verify
    assert await store.retire_key(old_kid)
    denied = (await store.check(ask(old, ["n001"], agent="r"), NOW)).result
    assert (denied.allowed, denied.caveat) == (False, cap.SIGNATURE) and old_kid in denied.reason
    assert (await store.check(ask(new, ["n001"], agent="r"), NOW)).result.allowed
    # another key-encryption key cannot open the stored root keys
    stranger = CapabilityStore(db, load_or_create_kek(tmp_path / "other.key"))
    with pytest.raises(InvalidTag):
        await stranger.mint("r", ["set_config"])


async def test_revocation_by_token_id_and_by_epoch(store: CapabilityStore) -> None:
    t1, t2 = await store.mint("c", ["set_config"]), await store.mint("c", ["set_config"])
    await store.revoke_token(cap.identity_of(t1).token_id, "leaked", NOW)
    assert (await store.check(ask(t1, ["n001"], agent="c"), NOW)).result.caveat == cap.REVOKED
    assert (await store.check(ask(t2, ["n001"], agent="c"), NOW)).result.allowed
    assert await store.bump_revocation_epoch() == 1
    assert (await store.check(ask(t2, ["n001"], agent="c"), NOW)).result.caveat == cap.EPOCH
    t3 = await store.mint("c", ["set_config"])
    assert cap.identity_of(t3).epoch == 1
    assert (await store.check(ask(t3, ["n001"], agent="c"), NOW)).result.allowed


async def test_a_halt_denies_every_check_until_it_ends(store: CapabilityStore) -> None:
    token = await store.mint("d", ["set_config"])
    acts = CapabilityActivities(store, clock=lambda: NOW)
    env = InterceptedEnvironment()
    epoch = await env.run(acts.allocate_halt_epoch, HaltRequest(request_key="watch:7", reason="drill"))
    assert epoch == await env.run(acts.allocate_halt_epoch, HaltRequest(request_key="watch:7", reason="drill"))
    assert not (await env.run(acts.halt_state)).halted  # allocated, not yet set
    await env.run(acts.set_halt, HaltSet(epoch=epoch, reason="drill"))
    for t in (token, "garbage"):
        res = (await env.run(acts.check_capability, ask(t, ["n001"], agent="d"))).result
        assert (res.allowed, res.caveat) == (False, cap.HALTED)
    ended = await store.end_halt(epoch, ["g1", "g2"], NOW)
    assert not ended.halted and ended.resumed_by == ["g1", "g2"]
    assert (await env.run(acts.check_capability, ask(token, ["n001"], agent="d"))).result.allowed


async def test_unregistered_targets_and_bad_registrations_are_refused(store: CapabilityStore) -> None:
    token = await store.mint("e", ["set_config"])
    res = (await store.check(ask(token, ["n001", "ghost"], agent="e"), NOW)).result
    assert (res.allowed, res.caveat) == (False, "registered-nodes") and "ghost" in res.reason
    with pytest.raises(InvalidInput, match="public key must be 32 bytes"):
        await store.add_node("n-x", "eu", "zz", NOW)


async def test_the_anomaly_feed_has_denials_at_once_and_actions_once_they_happened(store: CapabilityStore) -> None:
    token = cap.attenuate(await store.mint("f", ["set_config"]), ["affects_nodes_le = 3"])
    await store.check(ask(token, ["n001", "n002", "n003", "n004"], agent="f", action_id="too-wide"), NOW)
    await store.check(ask(token, ["n001", "n002"], agent="f", action_id="ok"), NOW)
    await store.check(ask(token, ["n005"], agent="f", action_id="given-up"), NOW)
    feed, last, live = await store.events(0, 100)
    assert [(e.action_id, e.allowed, e.caveat) for e in feed] == [("too-wide", False, "affects_nodes_le = 3")]
    assert live == 100
    await store.settle("ok", confirmed=True, now=NOW, endorsed_by=["p2", "p1"])
    await store.settle("ok", confirmed=True, now=NOW, endorsed_by=["p2", "p1"])  # a retry adds nothing
    await store.settle("given-up", confirmed=False, now=NOW)
    more, last2, _ = await store.events(last, 100)
    assert [(e.action_id, e.allowed, e.node_ids, e.endorsed_by) for e in more] == [
        ("ok", True, ["n001", "n002"], ["p1", "p2"])]
    assert (await store.events(last2, 100))[0] == []


async def test_mutated_tokens_never_pass_the_store_backed_check(store: CapabilityStore) -> None:
    """The whole path the activity takes (parse, key lookup, chain, caveats, registry, budget) on 300 mutants."""
    rng = random.Random(20261123)
    token = cap.attenuate(await store.mint("fz", ["set_config"]), ["affects_nodes_le = 3", "budget = 50/3600s"])
    assert (await store.check(ask(token, ["n001"], agent="fz"), NOW)).result.allowed
    seen = 0
    for i in range(300):
        kind = i % 3
        if kind == 0:
            mutant = token[:rng.randrange(len(token))]
        elif kind == 1:
            pos = rng.randrange(len(token))
            mutant = token[:pos] + rng.choice([c for c in B64 if c != token[pos]]) + token[pos + 1:]
        else:
            m = Macaroon.deserialize(token)
            del m.caveats[rng.randrange(len(m.caveats))]
            mutant = m.serialize()
        result = (await store.check(ask(mutant, ["n002"], agent="fz"), NOW)).result
        assert not result.allowed and result.caveat in {cap.MALFORMED, cap.SIGNATURE}, (mutant, result)
        seen += 1
    assert seen == 300


async def test_an_admin_change_is_applied_once_per_nonce_and_a_mint_travels_sealed(
        store: CapabilityStore, db: Database, tmp_path: Path) -> None:
    import dataclasses

    from nacl.public import PrivateKey, SealedBox
    from temporalio.exceptions import ApplicationError

    from activities import capability_admin as ca
    from westworld.agents import AdminAction, AdminApply, AdminChange
    from westworld.errors import UNAUTHORISED

    (tmp_path / "operator.pub").write_text("ab" * 32 + "\n")
    admin = ca.CapabilityAdminActivities(store, AdminStore(db), tmp_path / "operator.pub", clock=lambda: NOW)
    first = InterceptedEnvironment()
    first.info = dataclasses.replace(first.info, workflow_run_id="run-1")
    nodes = AdminApply(nonce="capability-admin:n1", change=AdminChange(
        action=AdminAction.ADD_NODES, node_ids=["x1", "n000"], region="lab"))
    done = await first.run(admin.apply, nodes)
    assert done.detail == "registered 1 nodes (1 known)"
    assert (await first.run(admin.apply, nodes)) == done  # a retry of the same run: the first answer
    replay = InterceptedEnvironment()
    replay.info = dataclasses.replace(replay.info, workflow_run_id="run-2")
    with pytest.raises(ApplicationError) as err:  # the same signed change in another run: refused
        await replay.run(admin.apply, nodes)
    assert err.value.type == UNAUTHORISED and "already applied" in err.value.message

    await store.add_node("peer-x", "lab", "cd" * 32, NOW)
    gone = await first.run(admin.apply, AdminApply(nonce="capability-admin:n1b", change=AdminChange(
        action=AdminAction.REMOVE_NODES, node_ids=["x1", "peer-x", "never-seen"])))
    assert gone.detail == "deregistered 1 nodes (2 unknown or peers)"  # a peer is never removed this way
    assert "x1" not in await store.node_regions() and "peer-x" in await store.peers()

    mine = PrivateKey.generate()
    mint = AdminApply(nonce="capability-admin:n2", change=AdminChange(
        action=AdminAction.MINT, subject="bot", actions=["restart"], recipient_key=bytes(mine.public_key).hex()))
    sealed = (await first.run(admin.apply, mint)).sealed_token
    token = SealedBox(mine).decrypt(bytes.fromhex(sealed)).decode()
    assert cap.identity_of(token).agent_id == "bot" and token.encode().hex() not in sealed
    again = (await first.run(admin.apply, mint)).sealed_token  # a retry re-mints the same token, sealed afresh
    assert SealedBox(mine).decrypt(bytes.fromhex(again)).decode() == token
    signers = await first.run(admin.admin_signers)
    assert signers.operators == {"operator": "ab" * 32}  # the genesis operator from operator.pub
    with pytest.raises(ApplicationError, match="needs the recipient_key"):
        await first.run(admin.apply, AdminApply(nonce="capability-admin:n3", change=AdminChange(
            action=AdminAction.MINT, subject="bot", actions=["restart"])))
