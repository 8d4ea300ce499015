"""Command-line options shared by the test suite (simulator seed counts and the seed start).

The Totem simulator's CI slice runs ``--sim-seeds`` seeds from a start drawn afresh for every
run (so every CI run explores new scenarios), printed in the report header and the summary;
``SIM_SEED_START=N`` (or ``--sim-start N``) runs the same slice again.  Under pytest-xdist the
controller draws the start once and hands it to every worker, so all collect the same tests.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

#: Fresh starts are drawn from here, far from the fixed seeds of the unit tests and the soak.
SIM_START_RANGE = (10_000_000, 2_000_000_000)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--sim-seeds``/``--sim-start``: the CI slice of seeded Totem scenarios; ``--sim-soak``: the long soak."""
    group = parser.getgroup("totem simulator")
    group.addoption("--sim-seeds", type=int, default=500, help="seeded simulator scenarios in the CI slice")
    group.addoption("--sim-start", type=int, default=None,
                    help="first simulator seed (default: $SIM_SEED_START, else drawn per run and printed)")
    group.addoption("--sim-soak", type=int, default=0, help="seeds for the @soak simulator run (0: skip)")


def sim_seed_start(config: pytest.Config) -> int:
    """The first seed of this run's simulator slice (the same on the controller and every worker)."""
    start = getattr(config, "_sim_seed_start", None)
    if start is None:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and "sim_seed_start" in workerinput:
            start = int(workerinput["sim_seed_start"])
        elif config.getoption("--sim-start") is not None:
            start = int(config.getoption("--sim-start"))
        elif os.environ.get("SIM_SEED_START"):
            start = int(os.environ["SIM_SEED_START"])
        else:
            start = random.SystemRandom().randrange(*SIM_START_RANGE)
        config._sim_seed_start = start  # type: ignore[attr-defined]
    return start


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # an xdist WorkerController
    """pytest-xdist: give every worker the controller's seed start."""
    node.workerinput["sim_seed_start"] = sim_seed_start(node.config)


def _slice_line(config: pytest.Config) -> str:
    start = sim_seed_start(config)
    count = config.getoption("--sim-seeds")
    return (f"totem simulator slice: seeds {start}..{start + count - 1} "
            f"(SIM_SEED_START={start} runs this slice again)")


def pytest_report_header(config: pytest.Config) -> str:
    """Name the seed start at the top of the run."""
    return _slice_line(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """And again at the end, where ``-q`` output and CI logs show it (when the slice ran)."""
    if getattr(config, "workerinput", None) is not None:
        return
    reports = [r for group in terminalreporter.stats.values() for r in group if hasattr(r, "nodeid")]
    if any("test_sim_core.py::test_seeded_faulty_scenarios" in r.nodeid for r in reports):
        terminalreporter.write_line(_slice_line(config))
