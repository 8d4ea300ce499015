"""bench/lck.py's call-layer row: pairs clients against the stub executive (the real IPC server, no ring)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "lck.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_lck", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_pairs_against_the_stub_executive_are_counted_and_costed():
    bench = _bench()
    rate, cost = bench.stub_pairs(2, 0.5)
    assert rate > 50  # every client locked and unlocked, through the real library and IPC server
    assert set(cost) == {"server_cpu_us_per_pair", "client_cpu_us_per_pair", "client_sys_us_per_pair",
                         "machine_idle_pct"}
    assert cost["server_cpu_us_per_pair"] > 0 and cost["client_cpu_us_per_pair"] > 0
    assert 0 <= cost["client_sys_us_per_pair"] <= cost["client_cpu_us_per_pair"]


def test_the_process_counters_read_this_process():
    import os

    bench = _bench()
    assert bench._ctx_switches(os.getpid()) > 0
    assert 0 <= bench._sys_s(os.getpid()) <= bench._cpu_s(os.getpid())
