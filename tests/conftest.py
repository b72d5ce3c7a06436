"""Shared fixtures. Fixture modules live in tests/fixtures/ and are loaded as plugins."""

from __future__ import annotations

import importlib.util

_FIXTURE_MODULES = [
    "tests.fixtures.hub_server",
    "tests.fixtures.tiny_models",
    "tests.fixtures.homes",
]

pytest_plugins = [name for name in _FIXTURE_MODULES if importlib.util.find_spec(name) is not None]
