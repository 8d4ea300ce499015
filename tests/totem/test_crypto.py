"""Packet security: AEAD envelopes (both ciphers), wrong keys, tampering, replays, old incarnations."""

from __future__ import annotations

import os
import struct

import pytest

from aisexec.totem.crypto import (
    CIPHERS,
    HEADER,
    KEY_CACHE_SIZE,
    OVERHEAD,
    PacketCrypto,
    PacketRejected,
    next_incarnation,
)
from tests.totem.test_crypto_reference import aes256_gcm_open, chacha20_poly1305_open, hkdf_sha256

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


def _documented_key(authkey: bytes, epoch: bytes, nodeid: int, label: bytes) -> bytes:
    """K_send exactly as docs/security.md writes it, with the stdlib HKDF of the reference module."""
    cluster = hkdf_sha256(authkey, b"openais-py totem v1", b"", 32)
    return hkdf_sha256(cluster, epoch, b"sender" + struct.pack("!I", nodeid) + label, 32)


@pytest.mark.parametrize(("cipher", "flags", "label", "reference"), [
    ("chacha20-poly1305", 0x01, b"", chacha20_poly1305_open),
    ("aes-256-gcm", 0x03, b"aes-256-gcm", aes256_gcm_open),
])
def test_envelope_follows_the_documented_construction(cipher, flags, label, reference):
    """An independent implementation (plain Python, no crypto library) opens a sealed packet with the key and
    nonce docs/security.md give."""
    authkey = os.urandom(128)
    epoch = struct.pack("!Q", 7) + os.urandom(8)
    crypto = PacketCrypto(3, authkey, epoch=epoch, cipher=cipher)
    crypto.seal(b"first")
    sealed = crypto.seal(b"totem packet, longer than one block of either cipher: " + bytes(range(40)), 9)
    magic, version, got_flags, sender, target, got_epoch, counter = HEADER.unpack_from(sealed)
    assert (magic, version, got_flags, sender, target, got_epoch, counter) == (0xA15E, 2, flags, 3, 9, epoch, 2)
    key = _documented_key(authkey, epoch, 3, label)
    nonce = struct.pack("!QI", counter, 0)
    plain = reference(key, nonce, sealed[HEADER.size :], sealed[: HEADER.size])
    assert plain == b"totem packet, longer than one block of either cipher: " + bytes(range(40))
    assert len(sealed) == len(plain) + OVERHEAD
    with pytest.raises(ValueError):  # the header is authenticated
        reference(key, nonce, sealed[HEADER.size :], b"\x00" + sealed[1 : HEADER.size])


#: ``seal(b"totem packet", 9)`` by node 3, authkey bytes 0..127, epoch incarnation 7 + 01..08, counter 1.  The
#: ChaCha20-Poly1305 one is also what the pycryptodome-based envelope of before cipher ids sealed.
KNOWN_PACKETS = {
    "chacha20-poly1305": "a15e02010000000300000009000000000000000701020304050607080000000000000001"
                         "f8012f641ad33e738df8a3f45d6ad6b4b64b68a9de089169e8b06d86",
    "aes-256-gcm": "a15e02030000000300000009000000000000000701020304050607080000000000000001"
                   "2ff000dafa9515d7f78987ffaf364f55f59e4dc1b4637926905ed1f2",
}


def test_a_known_sealed_packet_opens():
    """A datagram sealed once and written down: the wire format of envelope version 2 does not drift."""
    authkey = bytes(range(128))
    epoch = bytes.fromhex("00000000000000070102030405060708")
    for cipher, expected in KNOWN_PACKETS.items():
        crypto = PacketCrypto(3, authkey, epoch=epoch, cipher=cipher)
        assert crypto.seal(b"totem packet", 9).hex() == expected
        assert PacketCrypto(4, authkey, cipher="chacha20-poly1305").open(bytes.fromhex(expected)) == (
            3, 9, b"totem packet")


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_every_node_opens_every_cipher(cipher):
    """A node seals with its own crypto_cipher and opens both: a cluster changes cipher one node at a time."""
    other = next(c for c in CIPHERS if c != cipher)
    a, b = PacketCrypto(1, KEY, cipher=cipher), PacketCrypto(2, KEY, cipher=other)
    assert b.open(a.seal(b"to b"))[2] == b"to b"
    assert a.open(b.seal(b"to a"))[2] == b"to a"
    assert a.cipher == cipher and PacketCrypto(1, None, cipher=cipher).cipher == "none"


def test_unknown_cipher_ids_and_plain_packets_with_a_cipher_id_are_malformed():
    a, b = PacketCrypto(1, KEY), PacketCrypto(2, KEY)
    sealed = bytearray(a.seal(b"x"))
    sealed[3] = 0x01 | 5 << 1  # cipher id 5 does not exist
    with pytest.raises(PacketRejected, match="unknown cipher"):
        b.open(bytes(sealed))
    plain = bytearray(PacketCrypto(1, None).seal(b"x"))
    plain[3] = 1 << 1
    with pytest.raises(PacketRejected, match="cipher id on a plain"):
        PacketCrypto(2, None).open(bytes(plain))
    plain[3] = 0x11  # an unknown flag bit
    with pytest.raises(PacketRejected, match="unknown flags"):
        b.open(bytes(plain))
    assert b.stats.malformed == 2
    with pytest.raises(ValueError, match="unknown cipher"):
        PacketCrypto(1, KEY, cipher="aes-128-cbc")


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_seal_many_is_seal_in_one_pass(cipher):
    one, many = (PacketCrypto(1, KEY, cipher=cipher, epoch=b"e" * 16) for _ in range(2))
    packets = [os.urandom(n) for n in (1, 100, 1400, 1400)]
    singles = [one.seal(p, 7) for p in packets]
    assert many.seal_many(packets, 7) == singles
    assert many.seal(b"next") == one.seal(b"next") and many.stats.sealed == 5
    b = PacketCrypto(7, KEY)
    assert [b.open(d)[2] for d in singles] == packets
    plain, single = (PacketCrypto(1, None, epoch=b"e" * 16) for _ in range(2))
    assert plain.seal_many([b"a", b"b"]) == [single.seal(p) for p in (b"a", b"b")]


def test_replays_and_old_incarnations_are_dropped_before_decryption():
    """What the replay window already holds is refused unopened: a replay with a broken tag counts as a replay."""
    a, b = pair()
    first, second = a.seal(b"one"), a.seal(b"two")
    b.open(second)
    broken = bytearray(second)
    broken[-1] ^= 1
    with pytest.raises(PacketRejected, match="replayed"):
        b.open(bytes(broken))
    assert (b.stats.replays, b.stats.auth_failures) == (1, 0)
    assert b.open(first)[2] == b"one"  # an older counter inside the window is still fine, once
    new = PacketCrypto(1, KEY, epoch=struct.pack("!Q", 9) + os.urandom(8))
    b.open(new.seal(b"newer incarnation"))
    stale = bytearray(PacketCrypto(1, KEY, epoch=struct.pack("!Q", 8) + os.urandom(8)).seal(b"old"))
    stale[-1] ^= 1
    with pytest.raises(PacketRejected, match="older incarnation"):
        b.open(bytes(stale))
    assert (b.stats.old_epoch, b.stats.auth_failures) == (1, 0)


def test_only_authenticated_keys_are_cached_and_the_cache_is_bounded():
    b = PacketCrypto(2, KEY)
    forged = PacketCrypto(1, os.urandom(128))
    for _ in range(3):
        with pytest.raises(PacketRejected, match="invalid digest"):
            b.open(forged.seal(b"x"))
    assert b._openers == {}
    for n in range(KEY_CACHE_SIZE + 5):
        b.open(PacketCrypto(10 + n, KEY).seal(b"x"))
    assert len(b._openers) == KEY_CACHE_SIZE
    sender = PacketCrypto(99_999, KEY)
    b.open(sender.seal(b"x"))
    assert b.open(sender.seal(b"y"))[2] == b"y"  # cached, and still right
