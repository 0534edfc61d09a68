"""The hostile suite (docs/security.md): one test class per rule of the threat model.

The workflow harness (a real worker on a real Temporal server, real anvil and SQLite) is the one the workflow
tests use; its fixtures are re-exported here so a hostile test attacks exactly what users run.
"""

from tests.workflows.conftest import *  # noqa: F403  (fixtures are registered by name)
