"""The hostile suite (docs/security.md): one test class per rule of the threat model.

Its tests use the workflow harness (tests/fixtures/harness.py: a real worker on a real Temporal server, real anvil
and SQLite), registered for the whole session by tests/conftest.py, so a hostile test attacks exactly what users run.
"""
