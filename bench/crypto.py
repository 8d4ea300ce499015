"""Micro-benchmark of the per-packet AEAD cost: every library and cipher the Totem envelope could use.

    python bench/crypto.py                       # every candidate at 100, 1400 and 9000 bytes
    python bench/crypto.py --sizes 1400 --reps 9

Each candidate seals (encrypts and tags, with the 36-byte envelope header as
associated data) and opens (verifies and decrypts) packets of one size, a
fresh nonce per packet, as the transport does.  ``keying`` says whether the
library keeps one cipher object per key (``per-key``: the key schedule is
done once) or builds one per packet (``per-packet``: what pycryptodome's
API requires, since its objects take the nonce at construction).  The
``envelope`` rows are the whole :class:`aisexec.totem.crypto.PacketCrypto`
path (header, counter, key cache, replay window), i.e. what a Totem packet
really costs.

Repetitions are interleaved (rep 1 of every candidate, then rep 2, ...), so
the shared machine's noise falls on all of them alike; each line gives the
median over reps.  One JSON line per (lib, cipher, keying, op, size) with
``us_per_packet``, ``mb_per_s``, ``reps``, ``loadavg`` (the machine's 1-minute
load before and after: figures taken under load are inflated alike) and
``vs_baseline`` (how many times faster than pycryptodome's ChaCha20-Poly1305
built per packet, the envelope before this benchmark existed, same op and
size).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable

HEADER_SIZE = 36
TAG = 16
_NONCE = struct.Struct("!QI")
Seal = Callable[[int, bytes, bytes], bytes]
Open = Callable[[int, bytes], bytes]
#: Frames per token visit for the batched rows (max_messages' default).
RUN = 34


class Candidate:
    """One way of sealing and opening: a name and two closures over one key.

    ``seal_many`` (optional) seals a list of packets in one call; the benchmark then seals in runs
    of :data:`RUN` packets, as a token visit sends them.
    """

    def __init__(self, lib: str, cipher: str, keying: str, seal: Seal, open_: Open,
                 seal_many: Callable[[list[bytes]], list[bytes]] | None = None) -> None:
        self.lib = lib
        self.cipher = cipher
        self.keying = keying
        self.seal = seal
        self.open = open_
        self.seal_many = seal_many
        self.samples: dict[tuple[str, int], list[float]] = {}


def _pycryptodome(key: bytes) -> list[Candidate]:
    try:
        import Crypto
        from Crypto.Cipher import AES, ChaCha20_Poly1305
    except ImportError:
        return []
    lib = f"pycryptodome {Crypto.__version__}"

    def make(new: Callable[[bytes], object]) -> tuple[Seal, Open]:
        def seal(counter: int, header: bytes, packet: bytes) -> bytes:
            cipher = new(_NONCE.pack(counter, 0))
            cipher.update(header)
            body, tag = cipher.encrypt_and_digest(packet)
            return header + body + tag

        def open_(counter: int, datagram: bytes) -> bytes:
            cipher = new(_NONCE.pack(counter, 0))
            cipher.update(datagram[:HEADER_SIZE])
            return cipher.decrypt_and_verify(datagram[HEADER_SIZE:-TAG], datagram[-TAG:])

        return seal, open_

    chacha = make(lambda nonce: ChaCha20_Poly1305.new(key=key, nonce=nonce))
    gcm = make(lambda nonce: AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG))
    return [Candidate(lib, "chacha20-poly1305", "per-packet", *chacha),
            Candidate(lib, "aes-256-gcm", "per-packet", *gcm)]


def _cryptography(key: bytes) -> list[Candidate]:
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    except ImportError:
        return []
    lib = f"cryptography {cryptography.__version__} ({backend.openssl_version_text()})"
    found = []
    for cipher, cls, size in (("chacha20-poly1305", ChaCha20Poly1305, 32), ("aes-256-gcm", AESGCM, 32),
                              ("aes-128-gcm", AESGCM, 16)):
        aead = cls(key[:size])
        encrypt, decrypt = aead.encrypt, aead.decrypt

        def seal(counter: int, header: bytes, packet: bytes, encrypt=encrypt) -> bytes:
            return header + encrypt(_NONCE.pack(counter, 0), packet, header)

        def open_(counter: int, datagram: bytes, decrypt=decrypt) -> bytes:
            return decrypt(_NONCE.pack(counter, 0), datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])

        found.append(Candidate(lib, cipher, "per-key", seal, open_))
    # The same library with an object built for every packet: what the key schedule costs.
    k = key[:32]

    def seal_new(counter: int, header: bytes, packet: bytes) -> bytes:
        return header + ChaCha20Poly1305(k).encrypt(_NONCE.pack(counter, 0), packet, header)

    def open_new(counter: int, datagram: bytes) -> bytes:
        return ChaCha20Poly1305(k).decrypt(_NONCE.pack(counter, 0), datagram[HEADER_SIZE:],
                                           datagram[:HEADER_SIZE])

    found.append(Candidate(lib, "chacha20-poly1305", "per-packet", seal_new, open_new))
    return found


def _libsodium(key: bytes) -> list[Candidate]:
    """The system libsodium through ctypes (no Python package): the stateless C API, one call a packet."""
    name = ctypes.util.find_library("sodium")
    if name is None:
        return []
    try:
        sodium = ctypes.CDLL(name)
        if sodium.sodium_init() < 0:
            return []
        version = sodium.sodium_version_string
        version.restype = ctypes.c_char_p
        lib = f"libsodium {version().decode()} (ctypes)"
    except (OSError, AttributeError):
        return []
    found = []
    names = [("chacha20-poly1305", "crypto_aead_chacha20poly1305_ietf")]
    if sodium.crypto_aead_aes256gcm_is_available():
        names.append(("aes-256-gcm", "crypto_aead_aes256gcm"))
    ull = ctypes.c_ulonglong
    for cipher, prefix in names:
        enc = getattr(sodium, prefix + "_encrypt")
        dec = getattr(sodium, prefix + "_decrypt")

        def seal(counter: int, header: bytes, packet: bytes, enc=enc) -> bytes:
            out = ctypes.create_string_buffer(len(packet) + TAG)
            outlen = ull()
            enc(out, ctypes.byref(outlen), packet, ull(len(packet)), header, ull(HEADER_SIZE), None,
                _NONCE.pack(counter, 0), key)
            return header + out.raw

        def open_(counter: int, datagram: bytes, dec=dec) -> bytes:
            body = datagram[HEADER_SIZE:]
            out = ctypes.create_string_buffer(len(body))
            outlen = ull()
            if dec(out, ctypes.byref(outlen), None, body, ull(len(body)), datagram[:HEADER_SIZE],
                   ull(HEADER_SIZE), _NONCE.pack(counter, 0), key) != 0:
                raise ValueError("invalid tag")
            return out.raw[: outlen.value]

        found.append(Candidate(lib, cipher, "per-key", seal, open_))
    return found


def _envelope() -> list[Candidate]:
    """The project's own envelope, every cipher it offers: header, counter, key cache and replay window."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from aisexec.totem import crypto
    except ImportError:
        return []
    ciphers = getattr(crypto, "CIPHERS", {crypto.CIPHER_NAME: None})
    found = []
    authkey = os.urandom(128)
    for cipher in ciphers:
        kwargs = {} if ciphers[cipher] is None else {"cipher": cipher}
        receivers: list = []

        def make(cipher: str = cipher, kwargs: dict = kwargs, receivers: list = receivers) -> tuple[Seal, Open]:
            sender = crypto.PacketCrypto(1, authkey, epoch=b"\0" * 7 + b"\1" + os.urandom(8), **kwargs)

            def seal(counter: int, header: bytes, packet: bytes) -> bytes:
                return sender.seal(packet)

            def open_(counter: int, datagram: bytes) -> bytes:
                if counter == 1:  # a fresh receiver per run: its replay window must not see repeats
                    receivers[:] = [crypto.PacketCrypto(2, authkey, epoch=os.urandom(16), **kwargs)]
                return receivers[0].open(datagram)[2]

            return seal, open_

        found.append(Candidate("openais-py envelope", cipher, "per-key", *make()))
        if hasattr(crypto.PacketCrypto, "seal_many"):
            batcher = crypto.PacketCrypto(1, authkey, epoch=b"\0" * 7 + b"\1" + os.urandom(8), **kwargs)
            found.append(Candidate(f"openais-py envelope, seal_many x{RUN}", cipher, "per-key", *make(),
                                   seal_many=batcher.seal_many))
    return found


def measure(candidate: Candidate, size: int, count: int) -> None:
    """One rep of ``count`` seals then ``count`` opens; appends microseconds per packet to the samples."""
    header = os.urandom(HEADER_SIZE)
    packet = os.urandom(size)
    seal, open_ = candidate.seal, candidate.open
    clock = time.perf_counter
    sealed = [b""] * (count + 1)
    if candidate.seal_many is not None:
        seal_many, run = candidate.seal_many, [packet] * RUN
        start = clock()
        for _ in range(count // RUN):
            seal_many(run)
        seal_s = (clock() - start) * count / (count // RUN * RUN)
        for counter in range(1, count + 1):  # what the open half reads
            sealed[counter] = seal(counter, header, packet)
    else:
        start = clock()
        for counter in range(1, count + 1):
            sealed[counter] = seal(counter, header, packet)
        seal_s = clock() - start
    start = clock()
    for counter in range(1, count + 1):
        open_(counter, sealed[counter])
    open_s = clock() - start
    if not candidate.lib.startswith("openais-py"):
        assert open_(count, sealed[count]) == packet
    candidate.samples.setdefault(("seal", size), []).append(seal_s / count * 1e6)
    candidate.samples.setdefault(("open", size), []).append(open_s / count * 1e6)


def main(argv: list[str] | None = None) -> int:
    """Run every candidate, interleaved, and print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1400,9000", help="packet sizes in bytes (comma-separated)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--count", type=int, default=5000, help="packets per rep and op")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    key = os.urandom(32)
    candidates = _pycryptodome(key) + _cryptography(key) + _libsodium(key) + _envelope()
    load_before = os.getloadavg()[0]
    for candidate in candidates:  # warm up (imports, caches, lazy initialisation)
        measure(candidate, sizes[0], 200)
        candidate.samples.clear()
    for _rep in range(args.reps):
        for size in sizes:
            for candidate in candidates:
                measure(candidate, size, args.count)
    load_after = os.getloadavg()[0]
    baseline = {key: statistics.median(samples) for key, samples in candidates[0].samples.items()} \
        if candidates and candidates[0].lib.startswith("pycryptodome") else {}
    for candidate in candidates:
        for (op, size), samples in sorted(candidate.samples.items(), key=lambda item: (item[0][1], item[0][0])):
            us = statistics.median(samples)
            print(json.dumps({
                "bench": "crypto", "lib": candidate.lib, "cipher": candidate.cipher, "keying": candidate.keying,
                "op": op, "size": size, "us_per_packet": round(us, 2), "mb_per_s": round(size / us, 1),
                "reps": len(samples), "count": args.count, "loadavg": [round(load_before, 2), round(load_after, 2)],
                "vs_baseline": round(baseline[(op, size)] / us, 1) if (op, size) in baseline else None,
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
