"""Packet security for the Totem transport: ChaCha20-Poly1305 envelopes, per-sender session keys, replay windows.

Construction (``secauth: on``):

* ``K_cluster = HKDF-SHA256(ikm=authkey, salt="openais-py totem v1", L=32)``;
* every executive start picks an *epoch*: an incarnation counter persisted
  in ``OPENAIS_STATE_DIR/incarnation`` (u64, incremented at each start) and
  8 random bytes; ``K_send = HKDF-SHA256(K_cluster, salt=epoch,
  context="sender" || nodeid, L=32)``;
* each packet carries a 64-bit counter; the 96-bit ChaCha20-Poly1305 (RFC 8439)
  nonce is the counter followed by 4 zero bytes, so a nonce never repeats under
  one key (a lost incarnation file cannot cause reuse either: the random half
  of the epoch changes the key);
* the 36-byte cleartext header ``magic u16, version u8, flags u8, sender
  u32, target u32, epoch 16s, counter u64`` is the associated data; the
  Totem packet is the ciphertext; the 16-byte tag ends the datagram.

Receiving: the header is parsed strictly, the key derived (bounded LRU
cache), and the packet decrypted and verified in one call; a failure is
dropped, counted, and logged as ``Invalid digest`` at most once per
:data:`LOG_INTERVAL` seconds with the number suppressed.  Replays: for each
sender the highest incarnation seen wins (older epochs are rejected) and a
sliding window of :data:`REPLAY_WINDOW` counters drops repeats.  With
``secauth: off`` the same header travels with flag ``PLAIN`` and no tag, and
no replay check is made (nothing is authenticated).
``target`` is 0 for multicast, else the nodeid a unicast is meant for.

Envelope version 2 is ChaCha20-Poly1305 (version 1 was AES-256-GCM; with
pycryptodome a GCM object cost ~59 us per 1.4 KiB packet against ~25 us).
A node of the other version sees the datagrams as foreign and drops them.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

MAGIC = 0xA15E
VERSION = 2
#: Name of the AEAD, as tools and the benchmark print it.
CIPHER_NAME = "chacha20-poly1305"
FLAG_ENCRYPTED = 0x01
HEADER = struct.Struct("!HBBII16sQ")
_NONCE = struct.Struct("!QI")
TAG_SIZE = 16
#: Bytes every packet gains with secauth on (header + tag); subtract from netmtu.
OVERHEAD = HEADER.size + TAG_SIZE
REPLAY_WINDOW = 1024
LOG_INTERVAL = 10.0
KEY_CACHE_SIZE = 512

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


class PacketCrypto:
    """Seal outgoing and open incoming Totem datagrams for one node."""

    def __init__(self, nodeid: int, authkey: bytes | None, *, state_dir: str | os.PathLike | None = None,
                 epoch: bytes | None = None, clock=time.monotonic) -> None:
        self.nodeid = nodeid
        self.encrypted = authkey is not None
        self.stats = CryptoStats()
        self._clock = clock
        self._counter = 0
        self._windows: dict[int, _Window] = {}
        self._keys: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        if epoch is None:
            epoch = struct.pack("!Q", next_incarnation(state_dir)) + os.urandom(8)
        self.epoch = epoch
        if authkey is not None:
            self._cluster_key = HKDF(authkey, 32, b"openais-py totem v1", SHA256)
            self._send_key = self._derive(nodeid, epoch)

    def _derive(self, nodeid: int, epoch: bytes) -> bytes:
        return HKDF(self._cluster_key, 32, epoch, SHA256, context=b"sender" + struct.pack("!I", nodeid))

    def _key(self, nodeid: int, epoch: bytes) -> bytes:
        ident = (nodeid, epoch)
        key = self._keys.get(ident)
        if key is None:
            key = self._derive(nodeid, epoch)
            self._keys[ident] = key
            if len(self._keys) > KEY_CACHE_SIZE:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(ident)
        return key

    def seal(self, packet: bytes, target: int = 0) -> bytes:
        """Wrap one Totem packet for the wire (``target`` 0 = multicast)."""
        self._counter += 1
        self.stats.sealed += 1
        if not self.encrypted:
            return HEADER.pack(MAGIC, VERSION, 0, self.nodeid, target, self.epoch, self._counter) + packet
        header = HEADER.pack(MAGIC, VERSION, FLAG_ENCRYPTED, self.nodeid, target, self.epoch, self._counter)
        cipher = ChaCha20_Poly1305.new(key=self._send_key, nonce=_NONCE.pack(self._counter, 0))
        cipher.update(header)
        body, tag = cipher.encrypt_and_digest(packet)
        return header + body + tag

    def open(self, datagram: bytes) -> tuple[int, int, bytes]:
        """Return (sender, target, packet) or raise PacketRejected; counts every failure."""
        if len(datagram) < HEADER.size:
            self.stats.malformed += 1
            raise PacketRejected("datagram shorter than the envelope header")
        magic, version, flags, sender, target, epoch, counter = HEADER.unpack_from(datagram)
        if magic != MAGIC or version != VERSION or flags & ~FLAG_ENCRYPTED or sender == 0:
            self.stats.malformed += 1
            raise PacketRejected("not an openais-py datagram of this version")
        if bool(flags & FLAG_ENCRYPTED) != self.encrypted:
            self.stats.mode_mismatch += 1
            self._log_failure(f"packet from node {sender} with secauth {'on' if flags else 'off'}")
            raise PacketRejected("secauth mode mismatch")
        if self.encrypted:
            if len(datagram) < OVERHEAD:
                self.stats.malformed += 1
                raise PacketRejected("datagram shorter than header and tag")
            cipher = ChaCha20_Poly1305.new(key=self._key(sender, epoch), nonce=_NONCE.pack(counter, 0))
            cipher.update(datagram[: HEADER.size])
            try:
                packet = cipher.decrypt_and_verify(datagram[HEADER.size : -TAG_SIZE], datagram[-TAG_SIZE:])
            except ValueError:
                self.stats.auth_failures += 1
                self._log_failure(f"packet from node {sender}")
                raise PacketRejected("invalid digest") from None
            if sender != self.nodeid:  # own packets looped back are dropped by the driver (or expose a twin)
                self._check_replay(sender, epoch, counter)
        else:
            # Nothing is authenticated with secauth off, so a replay window would protect nothing;
            # Totem's ring ids and sequence numbers drop stale and duplicate packets themselves.
            packet = datagram[HEADER.size :]
        self.stats.opened += 1
        return sender, target, packet

    def _check_replay(self, sender: int, epoch: bytes, counter: int) -> None:
        window = self._windows.get(sender)
        if window is None or window.epoch != epoch:
            incarnation = struct.unpack_from("!Q", epoch)[0]
            if window is not None and incarnation < window.incarnation:
                self.stats.old_epoch += 1
                raise PacketRejected("packet from an older incarnation of the sender")
            window = _Window(incarnation, epoch)
            self._windows[sender] = window
        if counter > window.high:
            shift = counter - window.high
            window.seen = ((window.seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            window.high = counter
            return
        offset = window.high - counter
        if offset >= REPLAY_WINDOW or window.seen >> offset & 1:
            self.stats.replays += 1
            raise PacketRejected("replayed or too old packet")
        window.seen |= 1 << offset

    def _log_failure(self, what: str) -> None:
        now = self._clock()
        if now - self.stats._last_log >= LOG_INTERVAL:
            extra = f" ({self.stats._suppressed} more suppressed)" if self.stats._suppressed else ""
            log.warning("Invalid digest: %s; ignoring it (wrong authkey or secauth setting?)%s", what, extra)
            self.stats._last_log = now
            self.stats._suppressed = 0
        else:
            self.stats._suppressed += 1
