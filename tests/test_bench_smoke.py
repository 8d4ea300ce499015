"""The benchmarks still run and print the fields their consumers read (figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
FIELDS = {"impl", "nodes", "transport", "crypto", "receivers", "test", "size", "msgs_per_s", "mb_per_s",
          "median_us", "p99_us", "cpg_confchg_ms", "token_ms", "rep"}


def _rows(*args: str) -> list[dict]:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_cpg_benchmark_prints_every_field_for_every_size():
    rows = _rows(str(BENCH / "run.py"), "--nodes", "1", "--receivers", "0", "--crypto", "off", "--seconds", "0.3")
    assert all(FIELDS <= row.keys() and row["impl"] == "openais-py" for row in rows)
    throughput = {row["size"]: row for row in rows if row["test"] == "throughput"}
    assert sorted(throughput) == [64, 1024, 16384, 65536]
    assert all(row["msgs_per_s"] > 0 and row["mb_per_s"] > 0 for row in throughput.values())
    latency = [row for row in rows if row["test"] == "latency"]
    assert len(latency) == 1 and 0 < latency[0]["median_us"] <= latency[0]["p99_us"]
    assert {row.get("phase") for row in rows if row["test"] == "rss"} == {"idle", "load"}


def test_raw_ring_benchmark_measures_the_ring_alone():
    rows = _rows(str(BENCH / "ring.py"), "--nodes", "1", "--crypto", "on", "--seconds", "0.3")
    assert [row["size"] for row in rows if row["test"] == "throughput"] == [64, 1024, 16384, 65536]
    assert all(row["layer"] == "totem" and row["crypto"] == "chacha20-poly1305" for row in rows)
    assert all(row["msgs_per_s"] > 0 for row in rows if row["test"] == "throughput")
    assert [row["test"] for row in rows][-1] == "latency"


def test_floor_benchmark_delivers_every_message_to_both_receivers():
    rows = _rows(str(BENCH / "floor.py"), "--sizes", "64,16384", "--seconds", "0.3", "--crypto", "on")
    assert [row["size"] for row in rows] == [64, 16384]
    for row in rows:
        assert row["test"] == "floor" and row["crypto"] == "aes-256-gcm"
        assert row["delivered"] == row["sent"] > 0 and row["lost_frames"] == 0
        assert set(row["us_cpu_per_msg"]) == {"sender", "exec1", "exec2", "exec3", "recv2", "recv3"}
