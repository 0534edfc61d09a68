"""The hostile suite (docs/security.md): one test class per rule of the threat model.

The workflow harness (a real worker on a real Temporal server, real anvil and SQLite) is the one the workflow
tests use; its fixtures are re-exported here so a hostile test attacks exactly what users run.
"""

# The star import stops at that module's __all__, which names no fixture: the fixtures are imported by name.
from tests.workflows.conftest import *  # noqa: F403
from tests.workflows.conftest import funded_voters, harness, settings_overrides  # noqa: F401
