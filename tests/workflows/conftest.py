"""The workflow tests' harness lives in tests/fixtures/harness.py (registered for the whole session by
tests/conftest.py); the names the test modules import are re-exported here."""

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.fixed_ids import free_fixed_id
from tests.fixtures.harness import REPLAY_DIR, TOKEN, Harness, eventually, record_histories
from westworld.keys import WATCH_ID

__all__ = ["REPLAY_DIR", "TOKEN", "Harness", "eventually", "fresh_watch", "record_histories"]


@pytest.fixture
async def fresh_watch(harness: Harness) -> AsyncIterator[None]:
    """The network's watch has a fixed id: no run another test left is there when the test starts, and the test's
    own does not outlive it, whatever happens in it."""
    await free_fixed_id(harness.client, WATCH_ID)
    yield
    await free_fixed_id(harness.client, WATCH_ID, "test over")
