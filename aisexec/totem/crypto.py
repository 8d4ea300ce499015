"""Packet security for the Totem transport: AEAD envelopes, per-sender session keys, replay windows.

Construction (``secauth: on``):

* ``K_cluster = HKDF-SHA256(ikm=authkey, salt="openais-py totem v1", L=32)``;
* every executive start picks an *epoch*: an incarnation counter persisted
  in ``OPENAIS_STATE_DIR/incarnation`` (u64, incremented at each start) and
  8 random bytes; ``K_send = HKDF-SHA256(K_cluster, salt=epoch,
  context="sender" || nodeid || label, L=32)``, where ``label`` is empty for
  ChaCha20-Poly1305 and ``"aes-256-gcm"`` for AES-256-GCM (a key never
  serves two algorithms);
* each packet carries a 64-bit counter; the 96-bit AEAD nonce is the counter
  followed by 4 zero bytes, so a nonce never repeats under one key (a lost
  incarnation file cannot cause reuse either: the random half of the epoch
  changes the key);
* the 36-byte cleartext header ``magic u16, version u8, flags u8, sender
  u32, target u32, epoch 16s, counter u64`` is the associated data; the
  Totem packet is the ciphertext; the 16-byte tag ends the datagram.
  ``flags`` bit 0 is "encrypted", bits 1-3 the cipher id (0 ChaCha20-Poly1305
  (RFC 8439), 1 AES-256-GCM), so a ChaCha20-Poly1305 datagram is the same as
  before cipher ids existed.

Each node seals with the cipher its ``totem.crypto_cipher`` names (AES-256-GCM
unless it says ``chacha20``) and opens either (the cipher id is authenticated
with the header), so a cluster can change cipher one node at a time.  The
AEADs are OpenSSL's through the ``cryptography`` package: one cipher object
per key, built once (the send key at start, a sender's key at its first
authenticated packet) and kept, so a packet costs one encrypt or decrypt
call, about 1.5-2.5 us for 1.4 KiB.

Receiving (:meth:`PacketCrypto.open_many` for a run of datagrams, in order;
:meth:`PacketCrypto.open` for one): the header is parsed strictly; a counter the sender's replay
window has already seen, or an epoch older than the sender's current one, is
dropped *before* decryption (the window only ever records authenticated
packets, so this drops nothing that could be genuine).  Then the packet is
decrypted and verified in one call with the sender's cipher object (derived
on first use and cached, bounded, only once a packet authenticated with it);
a failure is dropped, counted, and logged as ``Invalid digest`` at most once
per :data:`LOG_INTERVAL` seconds with the number suppressed.  Replays: for
each sender the highest incarnation seen wins and a sliding window of
:data:`REPLAY_WINDOW` counters drops repeats.  With ``secauth: off`` the same
header travels with flags 0 and no tag, and no replay check is made (nothing
is authenticated; Totem drops stale and duplicate packets by ring id and
sequence number).  ``target`` is 0 for multicast, else the nodeid a unicast
is meant for.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0xA15E
VERSION = 2
FLAG_ENCRYPTED = 0x01
CIPHER_SHIFT = 1
CIPHER_MASK = 0x0E
#: AEAD name -> (cipher id in the flags, class, HKDF context label).
CIPHERS: dict[str, tuple[int, type, bytes]] = {
    "chacha20-poly1305": (0, ChaCha20Poly1305, b""),
    "aes-256-gcm": (1, AESGCM, b"aes-256-gcm"),
}
DEFAULT_CIPHER = "aes-256-gcm"
#: Name of the default AEAD, as tools and the benchmark print it.
CIPHER_NAME = DEFAULT_CIPHER
_Aead = ChaCha20Poly1305 | AESGCM
_BY_ID = {ident: (name, cls, label) for name, (ident, cls, label) in CIPHERS.items()}
HEADER = struct.Struct("!HBBII16sQ")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_UNKNOWN_FLAGS = 0xFF & ~(FLAG_ENCRYPTED | CIPHER_MASK)
_NONCE = struct.Struct("!QI")
_INCARNATION = struct.Struct("!Q")
TAG_SIZE = 16
#: Bytes every packet gains with secauth on (header + tag); subtract from netmtu.
OVERHEAD = HEADER.size + TAG_SIZE
REPLAY_WINDOW = 1024
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
LOG_INTERVAL = 10.0
KEY_CACHE_SIZE = 512
_CLUSTER_SALT = b"openais-py totem v1"

log = logging.getLogger("aisexec.totem")


class PacketRejected(Exception):
    """A datagram that failed parsing, authentication or the replay check."""


@dataclass(slots=True)
class _Window:
    """Replay state for one sender epoch."""

    incarnation: int
    epoch: bytes
    high: int = 0
    seen: int = 0  # bitmap: bit i set = counter (high - i) seen


@dataclass(slots=True)
class CryptoStats:
    """Counters for tools."""

    sealed: int = 0
    opened: int = 0
    auth_failures: int = 0
    malformed: int = 0
    replays: int = 0
    old_epoch: int = 0
    mode_mismatch: int = 0
    _last_log: float = field(default=0.0, repr=False)
    _suppressed: int = field(default=0, repr=False)

    def as_dict(self) -> dict:
        """Public counters."""
        return {k: getattr(self, k) for k in ("sealed", "opened", "auth_failures", "malformed", "replays",
                                                "old_epoch", "mode_mismatch")}


def next_incarnation(state_dir: str | os.PathLike | None) -> int:
    """Read, increment and persist the incarnation counter (0 and not persisted without a state dir)."""
    if state_dir is None:
        return 0
    path = Path(state_dir) / "incarnation"
    try:
        value = struct.unpack("!Q", path.read_bytes()[:8])[0] + 1
    except (OSError, struct.error):
        value = 1
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("!Q", value))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return value


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes = b"", length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


class PacketCrypto:
    """Seal outgoing and open incoming Totem datagrams for one node.

    ``cipher`` (a key of :data:`CIPHERS`) is what this node seals with; it
    opens datagrams of every cipher in :data:`CIPHERS`.
    """

    def __init__(self, nodeid: int, authkey: bytes | None, *, cipher: str = DEFAULT_CIPHER,
                 state_dir: str | os.PathLike | None = None, epoch: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown cipher {cipher!r} (known: {', '.join(CIPHERS)})")
        self.nodeid = nodeid
        self.encrypted = authkey is not None
        self.cipher = cipher if self.encrypted else "none"
        self.stats = CryptoStats()
        self._clock = clock
        self._counter = 0
        self._windows: dict[int, _Window] = {}
        # (flags, sender, epoch) -> the AEAD object of an authenticated sender; insertion order = age.
        self._openers: dict[tuple[int, int, bytes], _Aead] = {}
        if epoch is None:
            epoch = struct.pack("!Q", next_incarnation(state_dir)) + os.urandom(8)
        self.epoch = epoch
        self._flags = 0
        self._encrypt: Callable[[bytes, bytes, bytes | None], bytes] | None = None
        if authkey is not None:
            self._cluster_key = hkdf_sha256(authkey, _CLUSTER_SALT)
            ident = CIPHERS[cipher][0]
            self._flags = FLAG_ENCRYPTED | ident << CIPHER_SHIFT
            self._encrypt = self._aead(ident, nodeid, epoch).encrypt

    def _aead(self, ident: int, nodeid: int, epoch: bytes) -> _Aead:
        """A cipher object for the key ``nodeid`` uses in ``epoch`` with cipher ``ident``."""
        _name, cls, label = _BY_ID[ident]
        key = hkdf_sha256(self._cluster_key, epoch, b"sender" + struct.pack("!I", nodeid) + label)
        return cls(key)

    def seal(self, packet: bytes, target: int = 0) -> bytes:
        """Wrap one Totem packet for the wire (``target`` 0 = multicast)."""
        counter = self._counter = self._counter + 1
        self.stats.sealed += 1
        header = HEADER.pack(MAGIC, VERSION, self._flags, self.nodeid, target, self.epoch, counter)
        if self._encrypt is None:
            return header + packet
        return header + self._encrypt(_NONCE.pack(counter, 0), packet, header)

    def seal_many(self, packets: list[bytes], target: int = 0) -> list[bytes]:
        """:meth:`seal` for a run of packets to one destination, in order, in one pass."""
        counter = self._counter
        pack, nonce, encrypt = HEADER.pack, _NONCE.pack, self._encrypt
        flags, nodeid, epoch = self._flags, self.nodeid, self.epoch
        sealed = []
        append = sealed.append
        if encrypt is None:
            for packet in packets:
                counter += 1
                append(pack(MAGIC, VERSION, flags, nodeid, target, epoch, counter) + packet)
        else:
            for packet in packets:
                counter += 1
                header = pack(MAGIC, VERSION, flags, nodeid, target, epoch, counter)
                append(header + encrypt(nonce(counter, 0), packet, header))
        self._counter = counter
        self.stats.sealed += len(packets)
        return sealed

    def open(self, datagram: bytes) -> tuple[int, int, bytes]:
        """Return (sender, target, packet) or raise PacketRejected; counts every failure."""
        result = self.open_many((datagram,))[0]
        if result.__class__ is PacketRejected:
            raise result
        return result  # type: ignore[return-value]

    def open_many(self, datagrams: Iterable[bytes]) -> list[tuple[int, int, bytes] | PacketRejected]:
        """:meth:`open` for a run of datagrams, in order, in one pass: one result per datagram.

        A result is ``(sender, target, packet)``, or the :class:`PacketRejected` that :meth:`open`
        would raise (counted like it).  Each datagram is checked, opened and entered in its sender's
        replay window before the next is looked at, so a run behaves exactly as that many
        :meth:`open` calls (which is what :meth:`open` is: a run of one).
        """
        stats = self.stats
        unpack = _unpack_header
        windows = self._windows
        openers = self._openers
        encrypted = self.encrypted
        me = self.nodeid
        nonce = _NONCE.pack
        results: list[tuple[int, int, bytes] | PacketRejected] = []
        append = results.append
        opened = 0
        for datagram in datagrams:
            try:
                magic, version, flags, sender, target, epoch, counter = unpack(datagram)
            except struct.error:
                stats.malformed += 1
                append(PacketRejected("datagram shorter than the envelope header"))
                continue
            if magic != MAGIC or version != VERSION or sender == 0:
                stats.malformed += 1
                append(PacketRejected("not an openais-py datagram of this version"))
                continue
            if not flags:
                if encrypted:
                    append(self._mismatch(sender, flags))
                    continue
                # Nothing is authenticated with secauth off, so a replay window would protect nothing;
                # Totem's ring ids and sequence numbers drop stale and duplicate packets themselves.
                opened += 1
                append((sender, target, datagram[_HEADER_SIZE:]))
                continue
            if flags & _UNKNOWN_FLAGS or not flags & FLAG_ENCRYPTED:
                stats.malformed += 1
                append(PacketRejected("unknown flags, or a cipher id on a plain datagram"))
                continue
            if not encrypted:
                append(self._mismatch(sender, flags))
                continue
            if len(datagram) < OVERHEAD:
                stats.malformed += 1
                append(PacketRejected("datagram shorter than header and tag"))
                continue
            window = windows.get(sender)
            if window is not None:  # before decrypting: what the window already holds cannot be genuine
                if window.epoch == epoch:
                    offset = window.high - counter
                    if offset >= 0 and (offset >= REPLAY_WINDOW or window.seen >> offset & 1):
                        stats.replays += 1
                        append(PacketRejected("replayed or too old packet"))
                        continue
                elif _INCARNATION.unpack_from(epoch)[0] < window.incarnation:
                    stats.old_epoch += 1
                    append(PacketRejected("packet from an older incarnation of the sender"))
                    continue
            ident = (flags, sender, epoch)
            aead = openers.get(ident)
            fresh = aead is None
            if fresh:
                cipher = flags >> CIPHER_SHIFT
                if cipher not in _BY_ID:
                    stats.malformed += 1
                    append(PacketRejected("unknown cipher id"))
                    continue
                aead = self._aead(cipher, sender, epoch)
            try:
                # views, not slices: the ciphertext (up to a frame) and the header are not copied first
                view = memoryview(datagram)
                packet = aead.decrypt(nonce(counter, 0), view[_HEADER_SIZE:], view[:_HEADER_SIZE])
            except InvalidTag:
                stats.auth_failures += 1
                self._log_failure(f"packet from node {sender}")
                append(PacketRejected("invalid digest"))
                continue
            if fresh:  # only keys that authenticated a packet are kept: forgeries cannot flush the cache
                openers[ident] = aead
                if len(openers) > KEY_CACHE_SIZE:
                    del openers[next(iter(openers))]
            if sender != me:  # own packets looped back are dropped by the driver (or expose a twin)
                # Enter the authenticated packet in its sender's window (checked above, before decryption).
                if window is None or window.epoch != epoch:  # a newer incarnation (older ones were refused)
                    window = windows[sender] = _Window(_INCARNATION.unpack_from(epoch)[0], epoch)
                high = window.high
                if counter > high:
                    shift = counter - high
                    window.seen = ((window.seen << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
                    window.high = counter
                else:
                    window.seen |= 1 << (high - counter)
            opened += 1
            append((sender, target, packet))
        stats.opened += opened
        return results

    def _mismatch(self, sender: int, flags: int) -> PacketRejected:
        self.stats.mode_mismatch += 1
        self._log_failure(f"packet from node {sender} with secauth {'on' if flags & FLAG_ENCRYPTED else 'off'}")
        return PacketRejected("secauth mode mismatch")

    def _log_failure(self, what: str) -> None:
        now = self._clock()
        if now - self.stats._last_log >= LOG_INTERVAL:
            extra = f" ({self.stats._suppressed} more suppressed)" if self.stats._suppressed else ""
            log.warning("Invalid digest: %s; ignoring it (wrong authkey or secauth setting?)%s", what, extra)
            self.stats._last_log = now
            self.stats._suppressed = 0
        else:
            self.stats._suppressed += 1
