"""The policy in force: the worker enforces only a policy file whose hash the DAO put on chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.chain import ChainClient
from activities.policy import DEFAULT_POLICY_FILE, PolicyActivities, read_policy_file
from tests.fixtures.activity_env import InterceptedEnvironment
from westworld.errors import POLICY_INVALID, POLICY_MISMATCH
from westworld.policy import POLICY_HASH_KEY, policy_hash


async def test_the_shipped_policy_is_the_one_deployed(chain_client: ChainClient) -> None:
    policy = await InterceptedEnvironment().run(PolicyActivities(chain_client, DEFAULT_POLICY_FILE).load_policy)
    assert policy == read_policy_file(DEFAULT_POLICY_FILE)
    assert await chain_client.read_parameter(POLICY_HASH_KEY) == policy_hash(policy)


async def test_a_policy_the_dao_did_not_set_is_refused(chain_client: ChainClient, tmp_path: Path) -> None:
    looser = tmp_path / "policy.yaml"
    looser.write_text(DEFAULT_POLICY_FILE.read_text().replace('quorum_min: "0.04"', 'quorum_min: "0.02"'))
    with pytest.raises(ApplicationError) as err:
        await InterceptedEnvironment().run(PolicyActivities(chain_client, looser).load_policy)
    assert err.value.type == POLICY_MISMATCH and err.value.non_retryable
    assert "not the one on chain" in str(err.value)


async def test_a_policy_under_the_hard_floors_is_refused(chain_client: ChainClient, tmp_path: Path) -> None:
    captured = tmp_path / "policy.yaml"
    captured.write_text(DEFAULT_POLICY_FILE.read_text().replace("peers_required: 3", "peers_required: 1"))
    with pytest.raises(ApplicationError) as err:
        await InterceptedEnvironment().run(PolicyActivities(chain_client, captured).load_policy)
    assert err.value.type == POLICY_INVALID
    assert "peers.peers_required 1 < 2" in str(err.value)
