"""Independent reference AEADs in plain Python (stdlib only), checked against their published vectors.

The envelope known-answer tests (tests/totem/test_crypto.py) open sealed
packets with these, from the construction docs/security.md gives, so they
share no code with the library the executive uses.  Slow and not constant
time: for tests only.

* HKDF-SHA256: RFC 5869 over :mod:`hmac`;
* ChaCha20-Poly1305: RFC 8439 sections 2.3-2.8;
* AES-256-GCM: FIPS-197 AES and NIST SP 800-38D GCM (96-bit IV).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

# -- HKDF (RFC 5869) ------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand with HMAC-SHA256."""
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


# -- ChaCha20-Poly1305 (RFC 8439) ---------------------------------------------------

_M32 = 0xFFFFFFFF


def _rotl(v: int, n: int) -> int:
    return ((v << n) & _M32) | (v >> (32 - n))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & _M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _M32
    s[b] = _rotl(s[b] ^ s[c], 7)


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """One 64-byte ChaCha20 keystream block (RFC 8439 2.3)."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), counter,
             *struct.unpack("<3I", nonce)]
    work = list(state)
    for _ in range(10):
        _quarter(work, 0, 4, 8, 12)
        _quarter(work, 1, 5, 9, 13)
        _quarter(work, 2, 6, 10, 14)
        _quarter(work, 3, 7, 11, 15)
        _quarter(work, 0, 5, 10, 15)
        _quarter(work, 1, 6, 11, 12)
        _quarter(work, 2, 7, 8, 13)
        _quarter(work, 3, 4, 9, 14)
    return struct.pack("<16I", *((w + s) & _M32 for w, s in zip(work, state, strict=True)))


def chacha20(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    """RFC 8439 2.4 encryption (= decryption)."""
    out = bytearray()
    for i in range(0, len(data), 64):
        block = chacha20_block(key, counter + i // 64, nonce)
        out += bytes(x ^ y for x, y in zip(data[i : i + 64], block, strict=False))
    return bytes(out)


def poly1305(key: bytes, message: bytes) -> bytes:
    """RFC 8439 2.5 one-time authenticator."""
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(message), 16):
        acc = (acc + int.from_bytes(message[i : i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(data: bytes) -> bytes:
    return b"\0" * (-len(data) % 16)


def chacha20_poly1305_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """RFC 8439 2.8 AEAD: ciphertext || 16-byte tag."""
    otk = chacha20_block(key, 0, nonce)[:32]
    ciphertext = chacha20(key, 1, nonce, plaintext)
    mac_data = aad + _pad16(aad) + ciphertext + _pad16(ciphertext) + struct.pack("<QQ", len(aad), len(ciphertext))
    return ciphertext + poly1305(otk, mac_data)


def chacha20_poly1305_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Verify and decrypt; ValueError on a bad tag."""
    ciphertext, tag = sealed[:-16], sealed[-16:]
    otk = chacha20_block(key, 0, nonce)[:32]
    mac_data = aad + _pad16(aad) + ciphertext + _pad16(ciphertext) + struct.pack("<QQ", len(aad), len(ciphertext))
    expected = poly1305(otk, mac_data)
    if not hmac.compare_digest(expected, tag):
        raise ValueError("bad tag")
    return chacha20(key, 1, nonce, ciphertext)


# -- AES-256 (FIPS-197) and GCM (SP 800-38D) -------------------------------------------


def _xtime(a: int) -> int:
    a <<= 1
    return a ^ 0x11B if a & 0x100 else a


def _sbox() -> list[int]:
    box = [0] * 256
    p = q = 1
    while True:  # p runs over the multiplicative group (generator 3), q over the inverses
        p = p ^ _xtime(p)
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ ((q << 1) | (q >> 7)) ^ ((q << 2) | (q >> 6)) ^ ((q << 3) | (q >> 5)) ^ ((q << 4) | (q >> 4))
        box[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    box[0] = 0x63
    return box


_SBOX = _sbox()


def _expand_key(key: bytes) -> list[list[int]]:
    """AES-256 key schedule: 15 round keys of 16 bytes."""
    words = [list(key[i : i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        temp = list(words[i - 1])
        if i % 8 == 0:
            temp = [_SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            temp = [_SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - 8], temp, strict=True)])
    return [[b for word in words[4 * r : 4 * r + 4] for b in word] for r in range(15)]


def aes256_encrypt_block(round_keys: list[list[int]], block: bytes) -> bytes:
    """FIPS-197 cipher for one 16-byte block (state in column order, as the bytes come)."""
    s = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 15):
        s = [_SBOX[b] for b in s]
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]  # ShiftRows
        if rnd != 14:
            mixed = []
            for c in range(4):
                a = s[4 * c : 4 * c + 4]
                t = a[0] ^ a[1] ^ a[2] ^ a[3]
                mixed += [a[i] ^ t ^ _xtime(a[i] ^ a[(i + 1) % 4]) for i in range(4)]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[rnd], strict=True)]
    return bytes(s)


def _gf_mult(x: int, y: int) -> int:
    """Multiplication in GF(2^128) with GCM's bit order (SP 800-38D 6.3)."""
    r = 0xE1 << 120
    z, v = 0, y
    for i in range(127, -1, -1):
        if x >> i & 1:
            z ^= v
        v = (v >> 1) ^ r if v & 1 else v >> 1
    return z


def _ghash(h: int, aad: bytes, ciphertext: bytes) -> int:
    data = aad + _pad16(aad) + ciphertext + _pad16(ciphertext) + struct.pack(">QQ", 8 * len(aad), 8 * len(ciphertext))
    y = 0
    for i in range(0, len(data), 16):
        y = _gf_mult(y ^ int.from_bytes(data[i : i + 16], "big"), h)
    return y


def _gctr(round_keys: list[list[int]], counter_block: bytes, data: bytes) -> bytes:
    prefix, count = counter_block[:12], int.from_bytes(counter_block[12:], "big")
    out = bytearray()
    for i in range(0, len(data), 16):
        stream = aes256_encrypt_block(round_keys, prefix + ((count + i // 16) & _M32).to_bytes(4, "big"))
        out += bytes(x ^ y for x, y in zip(data[i : i + 16], stream, strict=False))
    return bytes(out)


def aes256_gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """SP 800-38D GCM-AE with a 96-bit IV: ciphertext || 16-byte tag."""
    round_keys = _expand_key(key)
    h = int.from_bytes(aes256_encrypt_block(round_keys, b"\0" * 16), "big")
    j0 = nonce + b"\0\0\0\1"
    ciphertext = _gctr(round_keys, nonce + b"\0\0\0\2", plaintext)
    tag = _gctr(round_keys, j0, _ghash(h, aad, ciphertext).to_bytes(16, "big"))
    return ciphertext + tag


def aes256_gcm_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Verify and decrypt; ValueError on a bad tag."""
    ciphertext, tag = sealed[:-16], sealed[-16:]
    round_keys = _expand_key(key)
    h = int.from_bytes(aes256_encrypt_block(round_keys, b"\0" * 16), "big")
    expected = _gctr(round_keys, nonce + b"\0\0\0\1", _ghash(h, aad, ciphertext).to_bytes(16, "big"))
    if not hmac.compare_digest(expected, tag):
        raise ValueError("bad tag")
    return _gctr(round_keys, nonce + b"\0\0\0\2", ciphertext)


# -- the references against their published vectors ------------------------------------


def test_hkdf_rfc5869_case_1():
    okm = hkdf_sha256(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"


def test_chacha20_poly1305_rfc8439_2_8_2():
    plaintext = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
                 b"sunscreen would be it.")
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    sealed = chacha20_poly1305_seal(key, nonce, plaintext, aad)
    assert sealed[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"
    assert sealed[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert chacha20_poly1305_open(key, nonce, sealed, aad) == plaintext
    with pytest.raises(ValueError):
        chacha20_poly1305_open(key, nonce, sealed, aad + b"x")


def test_aes256_fips197_c3():
    round_keys = _expand_key(bytes(range(32)))
    block = aes256_encrypt_block(round_keys, bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert block.hex() == "8ea2b7ca516745bfeafc49904b496089"


def test_aes256_gcm_sp800_38d_cases_13_and_14():
    key, nonce = b"\0" * 32, b"\0" * 12
    assert aes256_gcm_seal(key, nonce, b"", b"").hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    sealed = aes256_gcm_seal(key, nonce, b"\0" * 16, b"")
    assert sealed.hex() == "cea7403d4d606b6e074ec5d3baf39d18" "d0d1c8a799996bf0265b98b5d48ab919"
    assert aes256_gcm_open(key, nonce, sealed, b"") == b"\0" * 16
    with pytest.raises(ValueError):
        aes256_gcm_open(key, nonce, sealed, b"aad")
