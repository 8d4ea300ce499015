"""bench/codec.py still runs and prints its fields (figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "codec.py"


def test_codec_benchmark_prints_every_message_for_both_implementations():
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--repeat", "1"], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    seen = {(row["message"], row["impl"]) for row in rows}
    for message in ("cpg_mcast_request", "cpg_mcast_message", "cpg_deliver", "clm_buffer"):
        assert {(message, "message"), (message, "struct-before")} <= seen
    assert all(row["encode_ns"] > 0 and row["decode_ns"] > 0 and row["bytes"] > 0 for row in rows)
