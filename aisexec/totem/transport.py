"""UDP transports for Totem under gevent: ``udp`` (multicast) and ``udpu`` (unicast to listed members).

A transport only moves bytes.  It hands the driver *batches* of received
datagrams (everything readable at one wake-up, so data can be fed to the
core before a token that arrived with it), sends to one node or to every
node, and learns each node's address from the authenticated packets the
driver confirms with :meth:`Transport.learn`.

``udp``: a receive socket bound to ``mcastaddr:mcastport`` and joined to the
group on the interface that holds the local address; a send socket bound to
``local:mcastport-1`` (multicast loop on, so nodes sharing a host hear each
other; the driver drops its own copies); a unicast socket on
``local:mcastport`` for tokens.  ``udpu``: one socket on ``local:mcastport``;
a multicast is one unicast copy per configured member.

``bindnetaddr`` is either an exact local address (several executives on
127.0.0.1, 127.0.0.2, ... of one host) or a network address matched against
the host's interfaces.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import ipaddress
import logging
import socket as pysocket
import struct
import termios
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket

from aisexec.readiness import ReadWaiter

log = logging.getLogger("aisexec.totem")

#: Largest datagram accepted; anything longer is dropped.
MAX_DATAGRAM = 65535
BUFFER_BYTES = 4 * 1024 * 1024
# Linux UDP segmentation offload: one sendmsg carries a run of equal-sized datagrams (the last may be
# shorter) that the kernel cuts apart; with UDP_GRO a receiver reads such a run in one recvmsg.  Each
# datagram keeps its own envelope: this only saves system calls and wake-ups.
UDP_SEGMENT = getattr(pysocket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(pysocket, "UDP_GRO", 104)
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_GRO_CMSG_SPACE = pysocket.CMSG_SPACE(4)
_GSO_UNSUPPORTED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_SEGMENT_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_INQ = array.array("i", [0])  # FIONREAD's answer (one receive loop runs at a time: the hub is one thread)


def _queued(fd: int) -> int:
    """Bytes of the next datagram waiting on ``fd`` (``FIONREAD``); 0 when none is (or on error)."""
    try:
        fcntl.ioctl(fd, termios.FIONREAD, _INQ, True)
    except OSError:
        return 0
    return _INQ[0]


class TransportError(OSError):
    """The transport could not be set up (the message says which address and why)."""


Batch = list[tuple[bytes, tuple]]


def _ifreq(name: str, request: int) -> str | None:
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), request, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return pysocket.inet_ntoa(raw[20:24])


def ipv4_interfaces() -> list[tuple[str, int, ipaddress.IPv4Interface]]:
    """(name, index, address/netmask) of every IPv4 interface of the host."""
    found = []
    for index, name in pysocket.if_nameindex():
        addr = _ifreq(name, _SIOCGIFADDR)
        mask = _ifreq(name, _SIOCGIFNETMASK)
        if addr and mask:
            found.append((name, index, ipaddress.IPv4Interface(f"{addr}/{mask}")))
    return found


def resolve_bind(bindnetaddr: str) -> tuple[str, int]:
    """The local address to bind for ``bindnetaddr`` and its interface index."""
    wanted = ipaddress.ip_address(bindnetaddr)
    if wanted.version == 6:
        for line in open("/proc/net/if_inet6", encoding="ascii"):
            fields = line.split()
            addr = ipaddress.IPv6Address(int(fields[0], 16))
            if addr == wanted:
                return str(wanted), int(fields[1], 16)
        raise TransportError(errno.EADDRNOTAVAIL, f"bindnetaddr {bindnetaddr}: no local interface has this "
                                                  "IPv6 address (IPv6 needs the exact local address)")
    interfaces = ipv4_interfaces()
    for _name, index, iface in interfaces:  # an exact local address, or any of 127/8 on lo
        exact_loopback = wanted.is_loopback and wanted in iface.network and wanted != iface.network.network_address
        if iface.ip == wanted or exact_loopback:
            return str(wanted), index
    for _name, index, iface in interfaces:  # a network address: the first interface in it
        if wanted in iface.network:
            return str(iface.ip), index
    raise TransportError(errno.EADDRNOTAVAIL, f"bindnetaddr {bindnetaddr} matches no local interface")


def _udp_socket(family: int) -> Any:
    # A plain non-blocking socket, not gevent's wrapper: every call goes straight to the kernel (a datagram
    # that would block is dropped and counted; Totem retransmits), and the read loop waits with wait_read.
    sock = pysocket.socket(family, pysocket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
    sock.setblocking(False)
    return sock


def _bind(sock: Any, address: tuple) -> None:
    try:
        sock.bind(address)
    except OSError as exc:
        raise TransportError(exc.errno, f"cannot bind {address[0]}:{address[1]}: {exc.strerror}") from None


class Transport:
    """Common part: address book, statistics, receive loops that drain sockets in batches."""

    def __init__(self, local: str, port: int, family: int) -> None:
        self.local_address = local
        self.port = port
        self.family = family
        self.addresses: dict[int, str] = {}
        self.stats = {"packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0, "oversized": 0,
                      "send_errors": 0, "recv_errors": 0, "gso_sends": 0, "gro_reads": 0}
        self.gso = True  # cleared for good the first time the kernel refuses a segmented send
        self._gro_fds: set[int] = set()
        self._readers: list[gevent.Greenlet] = []
        self._sockets: list[Any] = []
        self._on_batch: Callable[[Batch], None] | None = None

    def start(self, on_batch: Callable[[Batch], None]) -> None:
        """Open the sockets and feed received batches to ``on_batch``."""
        self._on_batch = on_batch
        self._open()
        for sock in self._receivers():
            self._readers.append(gevent.spawn(self._read_loop, sock))

    def stop(self) -> None:
        """Close every socket."""
        for reader in self._readers:
            reader.kill(block=False)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def learn(self, nodeid: int, source: tuple) -> None:
        """Remember where ``nodeid`` lives (called for authenticated packets only)."""
        if self.addresses.get(nodeid) != source[0]:
            self.addresses[nodeid] = source[0]

    def address_of(self, nodeid: int) -> str | None:
        """The address learned for ``nodeid``."""
        return self.local_address if nodeid == getattr(self, "nodeid", None) else self.addresses.get(nodeid)

    def _enable_gro(self, sock: Any) -> None:
        """Ask the kernel to hand segmented runs over whole (kernels without UDP_GRO: one datagram a read)."""
        try:
            sock.setsockopt(pysocket.IPPROTO_UDP, UDP_GRO, 1)
        except OSError:
            return
        self._gro_fds.add(sock.fileno())

    def _read_loop(self, sock: Any) -> None:
        readable = ReadWaiter(sock.fileno())
        first = self._drain_first(sock)
        try:
            while True:
                readable.wait()
                batch: Batch = []
                if first is not None and _queued(first.fileno()):  # data that travelled with a token goes first
                    self._drain(first, batch)
                self._drain(sock, batch)
                if batch and self._on_batch is not None:
                    self._on_batch(batch)
        finally:
            readable.close()

    def _drain_first(self, sock: Any) -> Any:
        """A socket to drain before ``sock`` at every wake-up (None: nothing)."""
        return None

    def _drain(self, sock: Any, batch: Batch) -> None:
        """Read what ``sock`` holds into ``batch``: the first read is expected to succeed (it was readable).

        After each read the queue is asked (``FIONREAD``) whether more is waiting, instead of reading
        until ``EAGAIN``: the failing read and its exception cost several times a successful one, on
        every wake-up.
        """
        fd = sock.fileno()
        gro = fd in self._gro_fds
        recv = sock.recvmsg if gro else sock.recvfrom
        stats = self.stats
        while len(batch) < 512:
            try:
                if gro:
                    data, ancillary, _flags, source = recv(MAX_DATAGRAM + 1, _GRO_CMSG_SPACE)
                    if ancillary and self._split_run(data, ancillary, source, batch):
                        if _queued(fd):
                            continue
                        break
                else:
                    data, source = recv(MAX_DATAGRAM + 1)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if exc.errno == errno.EBADF:
                    return
                stats["recv_errors"] += 1
                break
            if len(data) > MAX_DATAGRAM:
                stats["oversized"] += 1
            else:
                stats["packets_in"] += 1
                stats["bytes_in"] += len(data)
                batch.append((data, source))
            if not _queued(fd):
                break

    def _split_run(self, data: bytes, ancillary: list, source: tuple, batch: Batch) -> bool:
        """Cut a run read with UDP_GRO into its datagrams; False when it is a single one."""
        level, kind, value = ancillary[0]
        if level != pysocket.IPPROTO_UDP or kind != UDP_GRO or len(value) < _GRO_SIZE.size:
            return False
        (size,) = _GRO_SIZE.unpack_from(value)
        if size <= 0 or size >= len(data):
            return False
        self.stats["gro_reads"] += 1
        self.stats["bytes_in"] += len(data)
        for start in range(0, len(data), size):
            self.stats["packets_in"] += 1
            batch.append((data[start : start + size], source))
        return True

    def _send_all(self, sock: Any, packets: list[bytes], address: tuple) -> None:
        """Send ``packets`` in order to one address: runs of equal size go out in one segmented call."""
        i, count = 0, len(packets)
        while i < count:
            size = len(packets[i])
            j, total = i + 1, size
            if self.gso:
                while (j < count and j - i < GSO_MAX_SEGMENTS and len(packets[j]) == size
                       and total + size <= GSO_MAX_BYTES):
                    total += size
                    j += 1
                if j < count and j - i < GSO_MAX_SEGMENTS and len(packets[j]) < size and \
                        total + len(packets[j]) <= GSO_MAX_BYTES:
                    j += 1  # a run may end with one shorter datagram
            if j - i == 1 or not self._send_segmented(sock, packets[i:j], size, address):
                for packet in packets[i:j]:
                    self._sendto(sock, packet, address)
            i = j

    def _send_segmented(self, sock: Any, run: list[bytes], size: int, address: tuple) -> bool:
        """One sendmsg for a run of datagrams of ``size`` bytes; False if the kernel cannot segment."""
        try:
            sock.sendmsg(run, [(pysocket.IPPROTO_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))], 0, address)
        except OSError as exc:
            if exc.errno in _GSO_UNSUPPORTED:
                self.gso = False
                log.info("UDP segmentation offload unavailable (%s): sending one datagram per call", exc.strerror)
                return False
            self.stats["send_errors"] += 1
            return True
        self.stats["gso_sends"] += 1
        self.stats["packets_out"] += len(run)
        self.stats["bytes_out"] += sum(map(len, run))
        return True

    def _sendto(self, sock: Any, data: bytes, address: tuple) -> None:
        try:
            sock.sendto(data, address)
        except OSError as exc:
            self.stats["send_errors"] += 1
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                log.debug("send to %s failed: %s", address, exc)
            return
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)

    def multicast_then_unicast(self, packets: list[bytes], nodeid: int, data: bytes, *,
                               defer_others: bool = False) -> bool:
        """``packets`` to every member, then ``data`` to ``nodeid``, in that order.

        ``defer_others``: a transport that sends one copy per member may hold back the copies for
        members other than ``nodeid`` until :meth:`send_deferred`, and then returns True (this one
        sends everything now).
        """
        self.multicast_many(packets)
        self.unicast(nodeid, data)
        return False

    @property
    def deferred(self) -> bool:
        """True while copies held back by ``defer_others`` wait for :meth:`send_deferred`."""
        return False

    def send_deferred(self) -> None:
        """Send the copies held back by ``defer_others`` (this transport holds none back)."""

    def healthy(self) -> bool:
        """True while the sockets are open."""
        return bool(self._sockets) and all(s.fileno() >= 0 for s in self._sockets)

    # subclass hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _receivers(self) -> list[Any]:
        raise NotImplementedError


class UdpuTransport(Transport):
    """Unicast UDP: a multicast is one copy to every configured member."""

    def __init__(self, local: str, port: int, members: list[str]) -> None:
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        super().__init__(local, port, family)
        self.members = [m for m in dict.fromkeys(members) if m != local]
        self._sock: Any = None
        # Copies held back by multicast_then_unicast(defer_others=True): (packets, member addresses).
        self._deferred: list[tuple[list[bytes], list[str]]] = []

    def _open(self) -> None:
        self._sock = _udp_socket(self.family)
        _bind(self._sock, (self.local_address, self.port))
        self._enable_gro(self._sock)
        self._sockets = [self._sock]

    def _receivers(self) -> list[Any]:
        return [self._sock]

    @property
    def deferred(self) -> bool:
        """True while copies held back by ``defer_others`` wait for :meth:`send_deferred`."""
        return bool(self._deferred)

    def send_deferred(self) -> None:
        """Send the copies held back by ``defer_others``, in the order they were held back."""
        deferred, self._deferred = self._deferred, []
        for packets, members in deferred:
            for member in members:
                self._send_all(self._sock, packets, (member, self.port))

    def multicast(self, data: bytes) -> None:
        """Send ``data`` to every member."""
        if self._deferred:
            self.send_deferred()  # what was held back goes first: each member gets packets in send order
        for member in self.members:
            self._sendto(self._sock, data, (member, self.port))

    def multicast_many(self, packets: list[bytes]) -> None:
        """Send ``packets``, in order, to every member (segmented runs where the kernel can)."""
        if self._deferred:
            self.send_deferred()
        for member in self.members:
            self._send_all(self._sock, packets, (member, self.port))

    def unicast(self, nodeid: int, data: bytes) -> None:
        """Send ``data`` to ``nodeid`` (to every member while its address is not known yet)."""
        if self._deferred:
            self.send_deferred()
        address = self.addresses.get(nodeid)
        if address is None:
            self.multicast(data)  # the envelope's target field keeps the others from acting on it
        else:
            self._sendto(self._sock, data, (address, self.port))

    def multicast_then_unicast(self, packets: list[bytes], nodeid: int, data: bytes, *,
                               defer_others: bool = False) -> bool:
        """``packets`` to every member, then ``data`` to ``nodeid`` (a token after the data it follows).

        ``nodeid`` gets its copies and ``data`` first, in one batch (it never sees the token before the
        data and is woken once); the other members get theirs right after, so a member downstream
        usually reads its data and the forwarded token together and delivers after passing the token on
        (measured: lower latency and more throughput than serving the others first).

        ``defer_others``: the other members' copies wait for :meth:`send_deferred` (or the next send,
        which sends them first).  The driver uses it to let this node's own deliveries reach its
        clients before the copies that only need to arrive ahead of the token, one hop later.
        """
        address = self.addresses.get(nodeid)
        if address is None or address not in self.members:
            return super().multicast_then_unicast(packets, nodeid, data)
        if self._deferred:
            self.send_deferred()
        self._send_all(self._sock, [*packets, data], (address, self.port))
        others = [member for member in self.members if member != address]
        if defer_others and others:
            self._deferred.append((packets, others))
            return True
        for member in others:
            self._send_all(self._sock, packets, (member, self.port))
        return False


class UdpTransport(Transport):
    """Multicast UDP: group ``mcastaddr:mcastport``; tokens unicast to ``address:mcastport``."""

    def __init__(self, local: str, port: int, group: str, ifindex: int, ttl: int = 1) -> None:
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        super().__init__(local, port, family)
        self.group = group
        self.ifindex = ifindex
        self.ttl = ttl
        self._mcast_rx: Any = None
        self._mcast_tx: Any = None
        self._token: Any = None

    def _open(self) -> None:
        rx = _udp_socket(self.family)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind(rx, (self.group, self.port))
        tx = _udp_socket(self.family)
        _bind(tx, (self.local_address, self.port - 1))
        if self.family == socket.AF_INET:
            mreqn = struct.pack("4s4si", socket.inet_aton(self.group), socket.inet_aton("0.0.0.0"), self.ifindex)
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                          struct.pack("4s4si", socket.inet_aton(self.group),
                                      socket.inet_aton(self.local_address), self.ifindex))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
        else:
            mreq = socket.inet_pton(socket.AF_INET6, self.group) + struct.pack("@I", self.ifindex)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
        token = _udp_socket(self.family)
        _bind(token, (self.local_address, self.port))
        self._mcast_rx, self._mcast_tx, self._token = rx, tx, token
        self._enable_gro(rx)
        self._sockets = [rx, tx, token]

    def _receivers(self) -> list[Any]:
        return [self._mcast_rx, self._token]

    def _drain_first(self, sock: Any) -> Any:
        return self._mcast_rx if sock is self._token else None

    def multicast(self, data: bytes) -> None:
        """Send ``data`` to the group."""
        self._sendto(self._mcast_tx, data, (self.group, self.port))

    def multicast_many(self, packets: list[bytes]) -> None:
        """Send ``packets``, in order, to the group (segmented runs where the kernel can)."""
        self._send_all(self._mcast_tx, packets, (self.group, self.port))

    def unicast(self, nodeid: int, data: bytes) -> None:
        """Send ``data`` to ``nodeid``'s token socket (to the group while its address is unknown)."""
        address = self.addresses.get(nodeid)
        if address is None:
            self.multicast(data)
        else:
            self._sendto(self._token, data, (address, self.port))


def make_transport(config: Any, nodeid: int) -> Transport:
    """Build the transport ``totem.transport`` names from ring 0 of the configuration."""
    iface = config.interfaces[0]
    local, ifindex = resolve_bind(str(iface["bindnetaddr"]))
    port = int(iface.get("mcastport") or 5405)
    kind = str(config.totem.get("transport") or "udp")
    if kind == "udpu":
        members = [str(m["memberaddr"]) for m in iface.get("members", [])]
        transport: Transport = UdpuTransport(local, port, members)
    else:
        transport = UdpTransport(local, port, str(iface.get("mcastaddr")), ifindex, int(iface.get("ttl") or 1))
    transport.nodeid = nodeid  # type: ignore[attr-defined]
    return transport
