"""Shared fixtures: real local servers started by the project's own code, never mocks."""

pytest_plugins = [
    "tests.fixtures.temporal",
    "tests.fixtures.anvil",
    "tests.fixtures.postgres",
    "tests.fixtures.snapshot_hub",
    "tests.fixtures.prometheus",
    "tests.fixtures.mesh",
    "tests.fixtures.kube",
    "tests.fixtures.ipfs",
    "tests.fixtures.arlocal",
    "tests.fixtures.harness",
]
