"""Shared fixtures: real local servers started by the project's own code, never mocks."""

pytest_plugins = [
    "tests.fixtures.temporal",
    "tests.fixtures.anvil",
    "tests.fixtures.postgres",
    "tests.fixtures.snapshot_hub",
]
