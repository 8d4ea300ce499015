"""Command-line options shared by the test suite (simulator seed counts)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--sim-seeds``/``--sim-start``: how many seeded Totem scenarios CI runs; ``--sim-soak``: the long soak."""
    group = parser.getgroup("totem simulator")
    group.addoption("--sim-seeds", type=int, default=500, help="seeded simulator scenarios in the CI slice")
    group.addoption("--sim-start", type=int, default=0, help="first simulator seed")
    group.addoption("--sim-soak", type=int, default=0, help="seeds for the @soak simulator run (0: skip)")
