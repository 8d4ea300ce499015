"""A callback that raises loses nothing: the callbacks read with it run at the next dispatch."""

from __future__ import annotations

import time

import pytest

import openais
from openais import cpg

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize("flags", [openais.DISPATCH_ALL, openais.DISPATCH_ONE])
def test_callbacks_after_one_that_raised_are_delivered_by_the_next_dispatch(openais_cluster, monkeypatch, flags):
    cluster = openais_cluster(1, secauth=False)
    for key, value in cluster.environ(1).items():
        monkeypatch.setenv(key, value)
    got: list[bytes] = []

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        got.append(data)
        if data == b"0":
            raise RuntimeError("the application's callback failed")

    with cpg.initialize(deliver=deliver) as h:
        h.join("raise")
        h.dispatch(openais.DISPATCH_ALL)  # the join's confchg
        for i in range(5):
            h.mcast(str(i).encode())
        h.flush()
        time.sleep(0.5)  # all five are in the dispatch socket: one read takes them together
        with pytest.raises(RuntimeError):
            h.dispatch(openais.DISPATCH_ALL)
        assert got == [b"0"]
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            h.dispatch(flags)
        assert got == [str(i).encode() for i in range(5)]
