"""Round-trips and strict rejection for every Totem packet type."""

from __future__ import annotations

import struct

import pytest

from aisexec.totem.wire import (
    HEADER,
    MAGIC,
    T_COMMIT_TOKEN,
    T_JOIN,
    T_ORF_TOKEN,
    VERSION,
    CommitToken,
    HoldCancel,
    Join,
    MalformedPacket,
    Mcast,
    MembEntry,
    MergeDetect,
    OrfToken,
    decode,
)

SAMPLES = [
    OrfToken(1, 1, 4, 2, 3, 3, 0, 5, 7, 1, ((1, 4, 2), (1, 4, 3))),
    OrfToken(1, 1, 4, 2, 3, 3, 0, 5, 7, 0, ()),
    Mcast(1, 1, 4, 1, 0, b"hi", True),
    Mcast(9, 1, 4, 1, 1, b"", False),
    Join(2, 8, (1, 2), (3,)),
    Join(0, 8, (), ()),
    CommitToken(1, 0, 1, 8, 0, 2, (1, 2), (MembEntry(1, 4, 3, 3, 1), MembEntry(2, 4, 0, 0, 0))),
    HoldCancel(1, 1, 4),
    MergeDetect(1, 1, 4),
]


@pytest.mark.parametrize("pkt", SAMPLES)
def test_round_trip(pkt):
    assert decode(pkt.encode()) == pkt


@pytest.mark.parametrize("pkt", [p for p in SAMPLES if not isinstance(p, Mcast)])
def test_truncated_and_extended_rejected(pkt):
    raw = pkt.encode()
    for cut in range(len(raw)):
        with pytest.raises(MalformedPacket):
            decode(raw[:cut])
    with pytest.raises(MalformedPacket):
        decode(raw + b"\0")


def test_bad_header_rejected():
    raw = bytearray(SAMPLES[4].encode())
    for offset, value in ((0, 0), (2, VERSION + 1), (3, 17), (4, 1)):
        bad = bytearray(raw)
        bad[offset] = value
        with pytest.raises(MalformedPacket):
            decode(bytes(bad))
    with pytest.raises(MalformedPacket):
        decode(b"\x70")


def test_rtr_limit_and_counts():
    body = struct.pack("!IQIIIIIIBB", 1, 4, 0, 0, 0, 0, 0, 0, 0, 31) + struct.pack("!IQI", 1, 4, 1) * 31
    with pytest.raises(MalformedPacket):
        decode(HEADER.pack(MAGIC, VERSION, T_ORF_TOKEN, 0, 1) + body)
    with pytest.raises(ValueError):
        OrfToken(1, 1, 4, 0, 0, 0, 0, 0, 0, 0, ((1, 4, 1),) * 31).encode()


def test_join_and_commit_counts_must_match():
    with pytest.raises(MalformedPacket):
        decode(HEADER.pack(MAGIC, VERSION, T_JOIN, 0, 1) + struct.pack("!QHH", 0, 385, 0) + b"\0" * 4 * 385)
    with pytest.raises(MalformedPacket):
        decode(HEADER.pack(MAGIC, VERSION, T_JOIN, 0, 1) + struct.pack("!QHH", 0, 2, 0) + b"\0" * 4)
    with pytest.raises(MalformedPacket):  # memb_index beyond count
        decode(HEADER.pack(MAGIC, VERSION, T_COMMIT_TOKEN, 0, 1) + struct.pack("!IIQBHH", 0, 1, 8, 0, 2, 1)
               + b"\0" * (4 + 21))
    with pytest.raises(MalformedPacket):  # zero members
        decode(HEADER.pack(MAGIC, VERSION, T_COMMIT_TOKEN, 0, 1) + struct.pack("!IIQBHH", 0, 1, 8, 0, 0, 0))


def test_mcast_bad_guarantee_rejected():
    raw = bytearray(Mcast(1, 1, 4, 1, 0, b"x").encode())
    raw[HEADER.size + 16] = 2
    with pytest.raises(MalformedPacket):
        decode(bytes(raw))


def _token_variants() -> list[bytes]:
    """Good and bad token packets: truncations, extensions, bad header fields, flags, counts, retrans."""
    good = [SAMPLES[0].encode(), SAMPLES[1].encode()]
    variants = list(good)
    for raw in good:
        variants += [raw[:cut] for cut in range(len(raw))] + [raw + b"\0"]
        for offset, value in ((0, 0), (2, VERSION + 1), (4, 1), (HEADER.size + 36, 2), (HEADER.size + 37, 31),
                              (HEADER.size + 37, 3)):
            bad = bytearray(raw)
            bad[offset] = value
            variants.append(bytes(bad))
    return variants


def test_the_core_takes_exactly_the_tokens_decode_takes() -> None:
    """SrpCore.receive unpacks tokens itself (the hot path): it must drop what wire.decode rejects."""
    from aisexec.totem.config import TotemConfig
    from aisexec.totem.srp import SrpCore

    seen: list[OrfToken] = []
    for raw in _token_variants():
        core = SrpCore(2, TotemConfig())
        core.start(0.0)
        core.on_token = lambda now, tok: seen.append(tok)  # type: ignore[method-assign]
        before = core.stats_counters["packets_malformed"]
        try:
            expected = decode(raw)
        except MalformedPacket:
            expected = None
        seen.clear()
        core.receive(0.0, raw)
        if expected is None:
            assert seen == [] and core.stats_counters["packets_malformed"] == before + 1, raw.hex()
        else:
            assert seen == [expected] and core.stats_counters["packets_malformed"] == before


def test_token_encoding_is_header_then_fields_then_rtr() -> None:
    tok = SAMPLES[0]
    assert tok.encode() == (HEADER.pack(MAGIC, VERSION, T_ORF_TOKEN, 0, tok.sender)
                            + struct.pack("!IQIIIIIIBB", *tok[1:10], len(tok.rtr))
                            + b"".join(struct.pack("!IQI", *e) for e in tok.rtr))
