"""Optional Prometheus ``/metrics`` endpoint of the executive, on loopback only.

:class:`MetricsServer` is a small gevent ``pywsgi`` server that answers
``GET /metrics`` with the Prometheus text exposition format
0.0.4, built from the executive's status dict returned by ``collect()``.
Any other path gives 404, any other method 405; a ``collect()`` or render
failure gives 500 and the server keeps serving.  It binds only to a
loopback address (127.0.0.0/8 or ``::1``): exposing cluster internals on a
routable address is refused with :class:`MetricsAddressError`.  Put a
reverse proxy or node exporter in front of it for remote scraping.

Mapping of the status dict (missing or ill-typed keys are skipped):

* fixed metrics: ``openais_up`` (always 1), ``openais_node_id``,
  ``openais_ring_members`` (length of ``members``), ``openais_ring_seq``
  (the sequence part of ``ring_id`` ``"<rep hex>.<seq hex>"``),
  ``openais_synced`` (0/1), ``openais_membership_state{state="..."} 1``;
* every numeric leaf of a nested dict ``status[section][key]`` becomes
  ``openais_<section>_<key>``; deeper dicts join their keys with ``_``;
  numeric top-level keys other than the fixed ones become ``openais_<key>``
  (e.g. ``openais_pending``).  Names are sanitised to ``[a-zA-Z0-9_]``;
  booleans are 0/1; strings and lists are skipped; a name that collides
  with one already emitted is dropped.

Counter or gauge (:func:`metric_kind`): every value of the executive's
statistics sections (:data:`COUNTER_SECTIONS`: ``stats``, ``transport_stats``,
``driver``, ``crypto_stats``, ``ipc``, ``routing``, ``faults``, ``sync``) only
ever grows, so it is a **counter**, except the levels listed in
:data:`GAUGE_KEYS` (``ipc.connections``, ``ipc.queued_bytes``,
``driver.max_pause_ms``) and keys that name a level by their first word
(:data:`LEVEL_PREFIXES`: ``max_``, ``min_``, ``current_``, ``queued_``) or
their last (:data:`LEVEL_WORDS`: ``connections``, ``queued_bytes``,
``members``, ``pending``).
Outside those sections (``quorum``, ``pending``, a section a plugin adds) a
metric is a counter when its sanitised key ends with one of the words in
:data:`COUNTER_WORDS` (``received``, ``sent``, ``retransmits``, ``failures``,
``malformed``, ``delivered``, ``originated``, ``dropped``, ``errors``,
``total``) — as the whole key or after an ``_`` — and a gauge otherwise.
A counter is exposed with a ``_total`` suffix (not doubled): the crypto
layer's ``crypto_stats.auth_failures`` is
``openais_crypto_stats_auth_failures_total``.

``collect()`` runs in the request's greenlet on the hub thread, so it must be
cheap and non-blocking (it only reads in-memory counters).  At most
:data:`MAX_CONCURRENT` requests are handled at once and each connection is
bounded by :data:`REQUEST_TIMEOUT`, so a slow or stuck scraper never holds
the hub.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer

log = logging.getLogger("aisexec.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "openais"
COUNTER_WORDS = ("received", "sent", "retransmits", "failures", "malformed", "delivered", "originated",
                 "dropped", "errors", "total")
#: Status sections whose values are cumulative counts since the executive started.
COUNTER_SECTIONS = frozenset({"stats", "transport_stats", "driver", "crypto_stats", "ipc", "routing", "faults",
                              "sync", "sender_guard"})
#: Levels (values that go down as well as up) inside :data:`COUNTER_SECTIONS`, as ``section.key``.
GAUGE_KEYS = frozenset({"ipc.connections", "ipc.queued_bytes", "driver.max_pause_ms"})
#: A key of a counter section starting with one of these names a level, not a count.
LEVEL_PREFIXES = ("max_", "min_", "current_", "queued_")
#: A key of a counter section ending with one of these words (whole, or after ``_``) names a level.
LEVEL_WORDS = ("connections", "queued_bytes", "members", "pending")
MAX_CONCURRENT = 8
REQUEST_TIMEOUT = 5.0
_FIXED_KEYS = frozenset({"nodeid", "state", "ring_id", "members", "synced"})
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]+")


class MetricsAddressError(ValueError):
    """The metrics address is not a loopback IP address."""


def check_loopback(address: str) -> str:
    """Return ``address`` normalised if it is a loopback IP; raise MetricsAddressError otherwise."""
    try:
        ip = ipaddress.ip_address(str(address).strip().strip("[]"))
    except ValueError:
        raise MetricsAddressError(
            f"metrics_address {address!r} is not an IP address; use 127.0.0.1 or ::1") from None
    if not ip.is_loopback:
        raise MetricsAddressError(
            f"metrics_address {address!r} is not a loopback address; the metrics endpoint binds only to "
            "127.0.0.0/8 or ::1 (scrape it through a local proxy or exporter)")
    return str(ip)


def sanitise(name: str) -> str:
    """A Prometheus-legal metric name fragment: runs of other characters become ``_``, no leading digit."""
    clean = _NAME_BAD.sub("_", str(name)).strip("_")
    if not clean:
        return "_"
    return f"_{clean}" if clean[0].isdigit() else clean


def is_counter(key: str) -> bool:
    """True when the sanitised ``key`` ends with a counter word (the rule outside the statistics sections)."""
    return any(key == word or key.endswith("_" + word) for word in COUNTER_WORDS)


def metric_kind(path: tuple[str, ...]) -> str:
    """``"counter"`` or ``"gauge"`` for the status leaf at ``path`` (``("crypto_stats", "auth_failures")``).

    In a :data:`COUNTER_SECTIONS` section everything is a counter but the
    levels (:data:`GAUGE_KEYS`, :data:`LEVEL_PREFIXES`, :data:`LEVEL_WORDS`); elsewhere
    :func:`is_counter` decides by the key's last word.
    """
    key = sanitise("_".join(path[1:])) if len(path) > 1 else sanitise(path[0])
    if len(path) > 1 and path[0] in COUNTER_SECTIONS:
        level = (f"{path[0]}.{key}" in GAUGE_KEYS or key.startswith(LEVEL_PREFIXES)
                 or any(key == word or key.endswith("_" + word) for word in LEVEL_WORDS))
        return "gauge" if level else "counter"
    return "counter" if is_counter(key) else "gauge"


def metric_name(path: tuple[str, ...]) -> str:
    """The exported name of the status leaf at ``path`` (``openais_<section>_<key>``, ``_total`` on counters)."""
    base = f"{PREFIX}_{sanitise('_'.join(path))}"
    if metric_kind(path) == "counter" and not base.endswith("_total"):
        return f"{base}_total"
    return base


def format_value(value: float) -> str:
    """A sample value as Prometheus text (integers without a decimal point; NaN and infinities spelt out)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_value(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(slots=True)
class _Family:
    """One metric family: name, type, help and its samples (label text, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)


class Exposition:
    """An ordered set of metric families with unique names, rendered as exposition text."""

    def __init__(self) -> None:
        """Start empty."""
        self.families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: float, labels: str = "") -> bool:
        """Add one sample as a new family; False (dropped) if ``name`` is already taken."""
        if name in self.families:
            log.debug("metrics: duplicate name %s dropped", name)
            return False
        self.families[name] = _Family(name, kind, help_text, [(labels, value)])
        return True

    def render(self) -> str:
        """The exposition text: ``# HELP``, ``# TYPE`` and the samples of every family, newline-terminated."""
        lines: list[str] = []
        for fam in self.families.values():
            lines.append(f"# HELP {fam.name} {fam.help}")
            lines.append(f"# TYPE {fam.name} {fam.kind}")
            lines.extend(f"{fam.name}{labels} {format_value(value)}" for labels, value in fam.samples)
        return "\n".join(lines) + "\n"


def _is_number(value: object) -> bool:
    return isinstance(value, bool | int) or (isinstance(value, float))


def _numeric_leaves(node: dict, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _numeric_leaves(value, (*path, str(key)))
        elif _is_number(value):
            yield (*path, str(key)), value


def _ring_seq(ring_id: object) -> int | None:
    """The sequence number of a ring id ``"<rep hex>.<seq hex>"`` (or an int/dict with ``seq``)."""
    if isinstance(ring_id, bool):
        return None
    if isinstance(ring_id, int):
        return ring_id
    if isinstance(ring_id, dict):
        seq = ring_id.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if isinstance(ring_id, str) and ring_id:
        try:
            return int(ring_id.rsplit(".", 1)[-1], 16)
        except ValueError:
            return None
    return None


def _add_fixed(out: Exposition, status: dict) -> None:
    out.add(f"{PREFIX}_up", "gauge", "1 while the executive answers metrics requests.", 1)
    nodeid = status.get("nodeid")
    if _is_number(nodeid) and not isinstance(nodeid, bool):
        out.add(f"{PREFIX}_node_id", "gauge", "Totem node id of this executive.", nodeid)
    members = status.get("members")
    if isinstance(members, list | tuple | set | frozenset):
        out.add(f"{PREFIX}_ring_members", "gauge", "Number of processors in the current ring.", len(members))
    seq = _ring_seq(status.get("ring_id"))
    if seq is not None:
        out.add(f"{PREFIX}_ring_seq", "gauge", "Sequence number of the current ring id.", seq)
    synced = status.get("synced")
    if isinstance(synced, bool | int):
        out.add(f"{PREFIX}_synced", "gauge", "1 when service synchronisation of the current ring completed.",
                1 if synced else 0)
    state = status.get("state")
    if isinstance(state, str) and state:
        out.add(f"{PREFIX}_membership_state", "gauge", "Totem membership state (label), always 1.", 1,
                f'{{state="{_label_value(state)}"}}')


def _add_leaf(out: Exposition, path: tuple[str, ...], value: float) -> None:
    kind = metric_kind(path)
    dotted = ".".join(path)
    out.add(metric_name(path), kind, f"{kind.capitalize()} {dotted} of the executive status.", value)


def render_status(status: dict) -> str:
    """Exposition text for one executive status dict (see the module docstring for the mapping)."""
    if not isinstance(status, dict):
        raise TypeError(f"collect() returned {type(status).__name__}, not dict")
    out = Exposition()
    _add_fixed(out, status)
    for key, value in status.items():
        if key in _FIXED_KEYS:
            continue
        if isinstance(value, dict):
            for path, leaf in _numeric_leaves(value, (str(key),)):
                _add_leaf(out, path, leaf)
        elif _is_number(value):
            _add_leaf(out, (str(key),), value)
    return out.render()


class _TimedHandler(WSGIHandler):
    """A pywsgi handler whose connection socket times out after REQUEST_TIMEOUT seconds of silence."""

    def handle(self) -> None:
        """Arm the socket timeout, then serve the connection as usual."""
        self.socket.settimeout(REQUEST_TIMEOUT)
        super().handle()


class MetricsServer:
    """HTTP server for ``GET /metrics`` on a loopback address, driven by the gevent hub.

    ``collect`` returns the executive's status dict; it is called once per
    scrape.  ``port`` 0 binds an ephemeral port (see :attr:`port` after
    :meth:`start`).  Raises :class:`MetricsAddressError` at construction for
    a non-loopback ``address``.
    """

    def __init__(self, address: str, port: int, collect: Callable[[], dict]) -> None:
        """Check the address and port; nothing is bound until :meth:`start`."""
        self.address = check_loopback(address)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"metrics_port {port!r} must be an integer from 0 to 65535")
        self._requested_port = port
        self._collect = collect
        self._server: WSGIServer | None = None
        self.scrapes = 0
        self.failures = 0

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        if self._server is not None and self._server.socket is not None:
            return self._server.server_port
        return self._requested_port

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/metrics`` (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None and self._server.started

    def start(self) -> None:
        """Bind and start serving in the background (OSError if the port is taken)."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        server = WSGIServer(
            (self.address, self._requested_port), self._app, spawn=Pool(MAX_CONCURRENT), log=None,
            error_log=LoggingLogAdapter(log, logging.DEBUG),
        )
        server.handler_class = _TimedHandler
        server.start()
        self._server = server
        log.info("metrics endpoint listening on %s", self.url)

    def stop(self) -> None:
        """Stop accepting and close the socket (waits at most 1 s for requests in progress)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(timeout=1.0)

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path != "/metrics":
            return self._reply(start_response, "404 Not Found", b"not found; try /metrics\n")
        if method != "GET":
            return self._reply(start_response, "405 Method Not Allowed", b"only GET\n", [("Allow", "GET")])
        try:
            body = render_status(self._collect()).encode()
        except Exception:
            self.failures += 1
            log.exception("metrics: collecting the executive status failed")
            return self._reply(start_response, "500 Internal Server Error", b"collecting metrics failed\n")
        self.scrapes += 1
        return self._reply(start_response, "200 OK", body, content_type=CONTENT_TYPE)

    @staticmethod
    def _reply(start_response: Callable, status: str, body: bytes, extra: list | None = None,
               content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
        start_response(status, headers)
        return [body]
