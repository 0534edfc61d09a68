"""The workflow tests' harness lives in tests/fixtures/harness.py (registered for the whole session by
tests/conftest.py); the names the test modules import are re-exported here."""

from tests.fixtures.harness import REPLAY_DIR, TOKEN, Harness, eventually, record_histories

__all__ = ["REPLAY_DIR", "TOKEN", "Harness", "eventually", "record_histories"]
