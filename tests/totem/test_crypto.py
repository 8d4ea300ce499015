"""Packet security: ChaCha20-Poly1305 envelopes, wrong keys, tampering, replays, old incarnations."""

from __future__ import annotations

import os
import struct

import pytest

from aisexec.totem.crypto import HEADER, OVERHEAD, PacketCrypto, PacketRejected, next_incarnation

KEY = os.urandom(128)


def pair(key_a=KEY, key_b=KEY, epoch=None):
    return PacketCrypto(1, key_a, epoch=epoch), PacketCrypto(2, key_b)


def test_round_trip_hides_the_payload_and_names_sender_and_target():
    a, b = pair()
    sealed = a.seal(b"totem packet", target=2)
    assert b"totem packet" not in sealed
    assert len(sealed) == len(b"totem packet") + OVERHEAD
    assert b.open(sealed) == (1, 2, b"totem packet")


def test_wrong_key_is_rejected_as_invalid_digest(caplog):
    a, b = pair(key_b=os.urandom(128))
    with pytest.raises(PacketRejected, match="invalid digest"):
        b.open(a.seal(b"x"))
    assert b.stats.auth_failures == 1
    assert "Invalid digest" in caplog.text


def test_any_flipped_bit_is_rejected():
    a, b = pair()
    sealed = bytearray(a.seal(b"payload bytes"))
    for position in (0, 5, HEADER.size - 1, HEADER.size + 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x04
        with pytest.raises(PacketRejected):
            b.open(bytes(tampered))
    assert b.open(bytes(sealed))[2] == b"payload bytes"


def test_replays_and_packets_outside_the_window_are_rejected():
    a, b = pair()
    packets = [a.seal(str(i).encode()) for i in range(1100)]
    b.open(packets[5])
    with pytest.raises(PacketRejected):
        b.open(packets[5])
    b.open(packets[3])  # late but inside the window: fine once
    b.open(packets[1099])
    with pytest.raises(PacketRejected):
        b.open(packets[10])  # more than 1024 behind the highest
    assert b.stats.replays == 2


def test_packets_of_an_older_incarnation_are_rejected():
    old = PacketCrypto(1, KEY, epoch=struct.pack("!Q", 4) + os.urandom(8))
    new = PacketCrypto(1, KEY, epoch=struct.pack("!Q", 5) + os.urandom(8))
    b = PacketCrypto(2, KEY)
    stale = old.seal(b"old")
    b.open(new.seal(b"new"))
    with pytest.raises(PacketRejected, match="older incarnation"):
        b.open(stale)


def test_plain_mode_and_mode_mismatch():
    plain_a, plain_b = PacketCrypto(1, None), PacketCrypto(2, None)
    assert plain_b.open(plain_a.seal(b"clear"))[2] == b"clear"
    secure = PacketCrypto(3, KEY)
    with pytest.raises(PacketRejected):
        secure.open(plain_a.seal(b"clear"))
    with pytest.raises(PacketRejected):
        plain_b.open(secure.seal(b"x"))


@pytest.mark.parametrize("junk", [b"", b"\x00" * 10, b"\xa1\x5e" + b"\x00" * 60, os.urandom(200)])
def test_garbage_is_rejected_and_counted(junk):
    b = PacketCrypto(2, KEY)
    with pytest.raises(PacketRejected):
        b.open(junk)
    assert b.stats.malformed + b.stats.auth_failures + b.stats.mode_mismatch == 1


def test_incarnation_counter_persists(tmp_path):
    assert next_incarnation(tmp_path) == 1
    assert next_incarnation(tmp_path) == 2
    assert PacketCrypto(1, KEY, state_dir=tmp_path).epoch[:8] == struct.pack("!Q", 3)


def test_envelope_follows_the_documented_construction():
    """An independent RFC 8439 implementation opens a sealed packet with the key and nonce docs/security.md give."""
    from Crypto.Cipher import ChaCha20_Poly1305
    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    authkey = os.urandom(128)
    epoch = struct.pack("!Q", 7) + os.urandom(8)
    sealed = PacketCrypto(3, authkey, epoch=epoch).seal(b"totem packet", 9)
    magic, version, flags, sender, target, got_epoch, counter = HEADER.unpack_from(sealed)
    assert (magic, version, flags, sender, target, got_epoch, counter) == (0xA15E, 2, 1, 3, 9, epoch, 1)
    cluster = HKDF(authkey, 32, b"openais-py totem v1", SHA256)
    key = HKDF(cluster, 32, epoch, SHA256, context=b"sender" + struct.pack("!I", 3))
    cipher = ChaCha20_Poly1305.new(key=key, nonce=struct.pack("!QI", counter, 0))
    cipher.update(sealed[: HEADER.size])
    assert cipher.decrypt_and_verify(sealed[HEADER.size : -16], sealed[-16:]) == b"totem packet"
    assert len(sealed) == len(b"totem packet") + OVERHEAD
