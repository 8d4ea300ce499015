"""Fault injection for received Totem packets: loss, duplication, delay with jitter, and partitions.

A :class:`FaultLayer` sits between packet authentication and the SRP core in
the driver (:meth:`FaultLayer.filter`).  It is configured from the
environment when the executive starts::

    OPENAIS_FAULTS="loss=0.1,dup=0.05,delay=5,jitter=2,block=2+3"
    OPENAIS_FAULTS_FILE=/path/to/control      # same syntax, polled every 200 ms

``block`` names nodeids whose packets are dropped (by the sender nodeid in
the Totem header), which is how tests partition running executives.  When
the control file's content changes it replaces the whole specification; an
empty or deleted file means no faults.  Delayed packets are handed back to
the driver through the ``reinject`` callable given to :meth:`FaultLayer.start`.
This is a test tool: whenever faults are active a warning is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("aisexec.totem")

ENV_FAULTS = "OPENAIS_FAULTS"
ENV_FAULTS_FILE = "OPENAIS_FAULTS_FILE"
POLL_INTERVAL = 0.2
_SENDER = struct.Struct("!I")
_SENDER_OFFSET = 5  # magic u16, version u8, type u8, flags u8, then the sender nodeid


@dataclass(frozen=True)
class FaultSpec:
    """What to do to received packets: probabilities in [0, 1], times in milliseconds, blocked senders."""

    loss: float = 0.0
    dup: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    block: frozenset[int] = field(default_factory=frozenset)

    @property
    def active(self) -> bool:
        """True when this specification changes anything."""
        return bool(self.loss or self.dup or self.delay_ms or self.jitter_ms or self.block)

    def describe(self) -> str:
        """The specification in the same syntax it is parsed from (empty when inactive)."""
        parts = []
        if self.loss:
            parts.append(f"loss={self.loss:g}")
        if self.dup:
            parts.append(f"dup={self.dup:g}")
        if self.delay_ms:
            parts.append(f"delay={self.delay_ms:g}")
        if self.jitter_ms:
            parts.append(f"jitter={self.jitter_ms:g}")
        if self.block:
            parts.append("block=" + "+".join(str(n) for n in sorted(self.block)))
        return ",".join(parts)


NO_FAULTS = FaultSpec()


def _probability(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault item {key}={value!r}: not a number") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"fault item {key}={value!r}: probability must be between 0 and 1")
    return number


def _milliseconds(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault item {key}={value!r}: not a number of milliseconds") from None
    if not 0.0 <= number <= 600_000.0 or number != number:
        raise ValueError(f"fault item {key}={value!r}: milliseconds must be between 0 and 600000")
    return number


def _nodeids(key: str, value: str) -> frozenset[int]:
    nodes = set()
    for word in value.split("+"):
        word = word.strip()
        if not word.isdigit() or not 0 < int(word) < 2**32:
            raise ValueError(f"fault item {key}={value!r}: {word!r} is not a nodeid (1..4294967295, joined by +)")
        nodes.add(int(word))
    return frozenset(nodes)


def parse_faults(text: str) -> FaultSpec:
    """Parse ``loss=P,dup=P,delay=MS,jitter=MS,block=N+N``; raises ValueError naming the bad item.

    Items are separated by commas (or whitespace); empty text means no faults.
    """
    values: dict[str, Any] = {}
    for item in text.replace("\n", ",").replace(" ", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise ValueError(f"fault item {item!r}: expected key=value")
        if key in values:
            raise ValueError(f"fault item {item!r}: {key} given twice")
        if key in ("loss", "dup"):
            values[key] = _probability(key, value)
        elif key in ("delay", "jitter"):
            values[key + "_ms"] = _milliseconds(key, value)
        elif key == "block":
            values[key] = _nodeids(key, value)
        else:
            raise ValueError(f"fault item {item!r}: unknown key {key!r} (loss, dup, delay, jitter, block)")
    return FaultSpec(**values)


Scheduler = Callable[..., Any]


def _gevent_schedule(seconds: float, function: Callable[..., Any], *args: Any) -> Any:
    import gevent

    return gevent.spawn_later(seconds, function, *args)


class FaultLayer:
    """Drops, duplicates, delays or blocks received plaintext Totem packets according to a :class:`FaultSpec`."""

    def __init__(
        self,
        spec: FaultSpec = NO_FAULTS,
        *,
        control_file: str | None = None,
        rng: random.Random | None = None,
        schedule: Scheduler = _gevent_schedule,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.spec = NO_FAULTS
        self.control_file = control_file
        self.rng = rng or random.Random()
        self.stats = {"dropped": 0, "duplicated": 0, "delayed": 0, "blocked": 0}
        self._schedule = schedule
        self._poll_interval = poll_interval
        self._reinject: Callable[[list[bytes]], None] | None = None
        self._poller: Any = None
        self._pending: list[Any] = []
        self._file_text: str | None = None
        self.configure(spec)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> FaultLayer | None:
        """A layer configured by ``OPENAIS_FAULTS`` / ``OPENAIS_FAULTS_FILE``; None when neither is set.

        A malformed ``OPENAIS_FAULTS`` or control file raises ValueError naming the bad item.
        """
        environ = os.environ if environ is None else environ
        text = environ.get(ENV_FAULTS, "")
        control_file = environ.get(ENV_FAULTS_FILE) or None
        if not text.strip() and control_file is None:
            return None
        layer = cls(parse_faults(text), control_file=control_file, **kwargs)
        if control_file is not None:
            log.warning("fault injection enabled: control file %s", control_file)
            layer.poll_control_file(strict=True)
        return layer

    # -- configuration -------------------------------------------------------------

    def configure(self, spec: FaultSpec) -> None:
        """Replace the specification (applies to the next packets received)."""
        if spec == self.spec:
            return
        self.spec = spec
        if spec.active:
            log.warning("fault injection active: %s", spec.describe())
        else:
            log.info("fault injection: no faults now (control file %s)", self.control_file)

    def poll_control_file(self, strict: bool = False) -> None:
        """Apply the control file if its content changed; a missing or empty file means no faults.

        A malformed file raises ValueError when ``strict``; otherwise it is logged and ignored.
        """
        if self.control_file is None:
            return
        try:
            with open(self.control_file, encoding="utf-8") as stream:
                text = stream.read()
        except FileNotFoundError:
            text = "" if self._file_text is not None else None  # missing at start: keep the environment's spec
        except OSError as exc:
            log.error("fault control file %s: %s", self.control_file, exc)
            return
        if text is None or text == self._file_text:
            return
        try:
            spec = parse_faults(text)
        except ValueError as exc:
            if strict:
                raise ValueError(f"{self.control_file}: {exc}") from None
            log.error("fault control file %s ignored: %s", self.control_file, exc)
            self._file_text = text
            return
        self._file_text = text
        self.configure(spec)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, reinject: Callable[[list[bytes]], None]) -> None:
        """Begin: delayed packets go to ``reinject``; the control file is polled every 200 ms."""
        self._reinject = reinject
        if self.control_file is not None and self._poller is None:
            import gevent

            self._poller = gevent.spawn(self._poll_loop)

    def stop(self) -> None:
        """Stop polling and forget delayed packets not yet released."""
        self._reinject = None
        if self._poller is not None:
            self._poller.kill(block=True, timeout=1)
            self._poller = None
        for timer in self._pending:
            kill = getattr(timer, "kill", None)
            if kill is not None:
                kill(block=False)
        self._pending.clear()

    def _poll_loop(self) -> None:
        import gevent

        while True:
            gevent.sleep(self._poll_interval)
            self.poll_control_file()

    # -- the hot path ----------------------------------------------------------------

    def filter(self, packets: list[bytes]) -> list[bytes]:
        """The packets to give the core now; delayed ones are released later through ``reinject``."""
        spec = self.spec
        if not spec.active or not packets:
            return packets
        block = spec.block
        loss, dup = spec.loss, spec.dup
        delaying = bool(spec.delay_ms or spec.jitter_ms) and self._reinject is not None
        random_ = self.rng.random
        stats = self.stats
        out: list[bytes] = []
        for packet in packets:
            if block and len(packet) >= _SENDER_OFFSET + 4 and _SENDER.unpack_from(packet, _SENDER_OFFSET)[0] in block:
                stats["blocked"] += 1
                continue
            if loss and random_() < loss:
                stats["dropped"] += 1
                continue
            copies = 1
            if dup and random_() < dup:
                stats["duplicated"] += 1
                copies = 2
            for _ in range(copies):
                if delaying:
                    self._delay(packet)
                else:
                    out.append(packet)
        return out

    def _delay(self, packet: bytes) -> None:
        spec = self.spec
        delay = spec.delay_ms
        if spec.jitter_ms:
            delay += self.rng.uniform(-spec.jitter_ms, spec.jitter_ms)
        self.stats["delayed"] += 1
        holder: list[Any] = []
        timer = self._schedule(max(delay, 0.0) / 1000.0, self._release, packet, holder)
        holder.append(timer)
        self._pending.append(timer)

    def _release(self, packet: bytes, holder: list[Any]) -> None:
        for timer in holder:
            with contextlib.suppress(ValueError):  # already released by stop()
                self._pending.remove(timer)
        block = self.spec.block  # a partition started while the packet was in flight cuts it too
        if block and len(packet) >= _SENDER_OFFSET + 4 and _SENDER.unpack_from(packet, _SENDER_OFFSET)[0] in block:
            self.stats["blocked"] += 1
            return
        if self._reinject is not None:
            self._reinject([packet])


def sender_of(packet: bytes) -> int | None:
    """The sender nodeid in a Totem header, or None for a packet too short to have one."""
    if len(packet) < _SENDER_OFFSET + 4:
        return None
    return _SENDER.unpack_from(packet, _SENDER_OFFSET)[0]

