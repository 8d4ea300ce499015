"""bench/evt.py still runs on 3 real executives and its rows add up (figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

BENCH = Path(__file__).resolve().parent.parent / "bench" / "evt.py"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    args = ["--seconds", "0.3", "--sizes", "64", "--procs", "1", "--publishers", "2"]
    out = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_throughput_rows_carry_every_process_cpu_and_their_totals(rows):
    throughput = [row for row in rows if row["test"] == "throughput"]
    assert [(row["receivers"], row["size"], row["publish"], row["concurrency"]) for row in throughput] == [
        (1, 64, "wait", 2), (1, 64, "nowait", 1), (2, 64, "wait", 2), (2, 64, "nowait", 1)]
    for row in throughput:
        receivers = row["receivers"]
        assert row["events"] > 0 and row["subscribers_received"] == [row["events"]] * receivers
        assert len(row["exec_cpu_us_per_event"]) == len(row["cpg_exec_cpu_us_per_msg"]) == 3
        # the publishers (or CPG's sender), then one figure per subscriber (or CPG receiver)
        assert len(row["clients_cpu_us_per_event"]) == len(row["cpg_clients_cpu_us_per_msg"]) == 1 + receivers
        assert row["clients_cpu_us_per_event"][0] > 0 and row["cpg_clients_cpu_us_per_msg"][0] > 0
        evt_total = sum(row["exec_cpu_us_per_event"]) + sum(row["clients_cpu_us_per_event"])
        cpg_total = sum(row["cpg_exec_cpu_us_per_msg"]) + sum(row["cpg_clients_cpu_us_per_msg"])
        assert row["total_cpu_us_per_event"] == pytest.approx(evt_total, abs=0.2)
        assert row["cpg_total_cpu_us_per_msg"] == pytest.approx(cpg_total, abs=0.2)
        assert row["cpu_ratio_vs_cpg"] == pytest.approx(cpg_total / evt_total, rel=0.01)


def test_latency_and_rss_rows(rows):
    latencies = [row for row in rows if row["test"] == "latency"]
    assert [row["publish"] for row in latencies] == ["wait", "nowait"]  # one row per publish mode
    assert latencies[0]["remote_median_us"] > 0 and "remote_median_us" not in latencies[1]
    # both rows stand beside the same CPG probe
    assert latencies[0]["cpg_rounds_median_us"] == latencies[1]["cpg_rounds_median_us"]
    for latency in latencies:
        assert 0 < latency["median_us"] <= latency["p99_us"]
        assert 0 < latency["cpg_median_us"] <= latency["cpg_p99_us"]
        assert latency["python"].startswith("CPython ") and latency["py_unpack_ns"] > 0
        # EVT's and CPG's probes take turns: a median per round of each, in the order taken
        rounds = latency["rounds"]
        assert rounds > 1 and len(latency["rounds_median_us"]) == len(latency["cpg_rounds_median_us"]) == rounds
        assert len(latency["rounds_ratio_vs_cpg"]) == rounds and all(r > 0 for r in latency["rounds_ratio_vs_cpg"])
        assert min(latency["rounds_median_us"]) <= latency["median_us"] <= max(latency["rounds_median_us"])
    assert {row["phase"] for row in rows if row["test"] == "rss"} == {"idle", "load"}
