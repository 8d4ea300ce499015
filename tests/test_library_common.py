"""The argument checks and async-open bookkeeping the service libraries share (openais._common)."""

from __future__ import annotations

import math

import pytest

import openais
from openais import _common, ckpt, evt, lck


@pytest.mark.parametrize("version", [("B", 1, 1), ("B", 3, 9), ("B", 2, 0)])
def test_check_version_accepts_the_majors_spoken(version):
    assert _common.check_version(version, "X", (1, 2, 3), "B.03.01") == version


@pytest.mark.parametrize("version", [("A", 3, 1), ("B", 4, 1), ("B", 0, 1), ("B", 3), "B.03.01", (b"B", 3, 1),
                                     ("B", "3", 1), ("B", True, 1), ("B", 3, None), ["B", 3, 1], None])
def test_check_version_refuses_anything_else(version):
    with pytest.raises(openais.Version, match=r"X speaks B\.03\.01"):
        _common.check_version(version, "X", (1, 2, 3), "B.03.01")


def test_check_name_rows():
    assert _common.check_name("a" * 256) == "a" * 256
    assert _common.check_name("é" * 128) == "é" * 128  # 256 bytes of UTF-8
    for bad in (None, b"name", 3, "", "\udc80"):
        with pytest.raises(openais.InvalidParam):
            _common.check_name(bad, "channel name")
    with pytest.raises(openais.NameTooLong, match="channel name is 257 bytes"):
        _common.check_name("a" * 257, "channel name")
    with pytest.raises(openais.NameTooLong):
        _common.check_name("abc", max_len=2)


def test_check_u64_and_invocation():
    assert _common.check_invocation(0) == 0 and _common.check_u64(_common.U64_MAX, "x") == _common.U64_MAX
    for bad in (-1, 1 << 64, True, 1.0, "1", None):
        with pytest.raises(openais.InvalidParam):
            _common.check_invocation(bad)


def test_timeout_ns_rows():
    assert _common.timeout_ns(None, -1) == -1
    assert _common.timeout_ns(1.5, -1) == 1_500_000_000
    assert _common.timeout_ns(math.inf, -1) == -1 and _common.timeout_ns(1e12, -1) == -1  # beyond SaTimeT: forever
    assert _common.timeout_ns(1e12, -1, infinite=False) == _common.TIME_MAX
    for bad in (-1, math.nan, True, "1", [1]):
        with pytest.raises(openais.InvalidParam):
            _common.timeout_ns(bad, -1)
    with pytest.raises(openais.InvalidParam):
        _common.timeout_ns(math.inf, -1, infinite=False)
    for zero in (0, 0.0, 1e-12):
        with pytest.raises(openais.Timeout):
            _common.timeout_ns(zero, -1)


def test_async_opens_are_answered_in_the_order_asked():
    pending: dict = {}
    _common.remember_open(pending, 7, ("a", 1))
    _common.remember_open(pending, 7, ("b", 2))
    _common.remember_open(pending, 8, ("c", 3))
    _common.forget_open(pending, 8)  # that call failed
    assert 8 not in pending
    assert _common.claim_open(pending, 7, None) == ("a", 1)
    assert _common.claim_open(pending, 7, None) == ("b", 2)
    assert pending == {} and _common.claim_open(pending, 7, ("", 0)) == ("", 0)
    _common.forget_open(pending, 9)  # nothing remembered: nothing to forget


def test_the_services_answer_the_same_mistake_the_same_way():
    for raiser in (lambda: ckpt.initialize(version=("B", 9, 1)), lambda: evt.initialize(version=("B", 9, 1)),
                   lambda: lck.initialize(version=("B", 9, 1))):
        with pytest.raises(openais.Version):
            raiser()
    assert isinstance(ckpt.name_error("x" * 300), openais.NameTooLong)
    assert isinstance(ckpt.name_error(""), openais.InvalidParam) and ckpt.name_error("ok") is None
    for check in (evt.check_name, lck._name):
        with pytest.raises(openais.NameTooLong):
            check("x" * 300)
        with pytest.raises(openais.InvalidParam):
            check(42)
