"""Shared fixtures: each concern keeps its own module under ``tests/fixtures``."""

pytest_plugins = [
    "fixtures.lab",
    "fixtures.cassandra",
    "fixtures.prometheus",
]
