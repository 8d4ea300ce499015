"""The Prometheus endpoint: exposition format, names and types, loopback-only binding, resilience to errors."""

from __future__ import annotations

import dataclasses
import re

import gevent
import gevent.socket
import pytest

from aisexec.metrics import (
    MetricsAddressError,
    MetricsServer,
    is_counter,
    metric_kind,
    metric_name,
    render_status,
    sanitise,
)

#: The shape of the executive's status (``Executive.ring_status`` via ``ServiceLayer.ring_status``).
STATUS = {
    "nodeid": 3,
    "state": "OPERATIONAL",
    "ring_id": "1.1c",
    "members": [1, 2, 3],
    "synced": True,
    "rings": [{"ringnumber": 0, "status": "active"}],
    "crypto": "chacha20-poly1305",
    "pending": 5,
    "stats": {"tokens_received": 55, "retransmits": 2, "gather_entered": 1, "joins_received": 4, "token_losses": 0},
    "transport_stats": {"packets_in": 9, "bytes_in": 900, "send_errors": 1, "gso_sends": 3},
    "driver": {"rejected": 1, "pauses": 1, "max_pause_ms": 1200, "memberships": 3},
    "crypto_stats": {"sealed": 100, "opened": 90, "auth_failures": 7, "mode_mismatch": 0},
    "faults": {},
    "ipc": {"connections": 2, "queued_bytes": 128, "accepted": 5, "refused": 1, "requests": 30,
            "by-service": {"cpg connections": 1}},
    "routing": {"delivered": 40, "held": 0, "note": "text is skipped"},
    "quorum": {"quorate": True, "expected_votes": 3, "total_votes": 3, "quorum": 2, "flags": ["WaitForAll"]},
}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$')


def parse_exposition(text: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """Parse exposition text strictly: HELP then TYPE before samples, no duplicate family; name -> (type, samples)."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, list]] = {}
    helped: set[str] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"duplicate HELP {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped, f"TYPE before HELP for {name}"
            assert name not in families, f"duplicate family {name}"
            assert kind in ("counter", "gauge")
            families[name] = (kind, [])
            current = name
        else:
            match = SAMPLE.match(line)
            assert match, f"bad sample line {line!r}"
            assert match.group(1) == current, f"sample {line!r} outside its family"
            families[current][1].append((match.group(2) or "", float(match.group(3))))
    return families


def value_of(families: dict, name: str) -> float:
    """The single sample value of family ``name``."""
    (_, value), = families[name][1]
    return value


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.0 request over a gevent socket (cooperative without monkey-patching)."""
    with gevent.Timeout(5):
        sock = gevent.socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def serve():
    """Start MetricsServer instances on 127.0.0.1:0 and stop every one at the end."""
    started: list[MetricsServer] = []

    def _serve(collect):
        server = MetricsServer("127.0.0.1", 0, collect)
        server.start()
        started.append(server)
        return server

    try:
        yield _serve
    finally:
        for server in started:
            server.stop()


def test_metrics_exposition_parses_and_maps_status(serve):
    server = serve(lambda: STATUS)
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, headers, body = http_get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse_exposition(body.decode())
    assert value_of(fams, "openais_up") == 1
    assert value_of(fams, "openais_node_id") == 3
    assert value_of(fams, "openais_ring_members") == 3
    assert value_of(fams, "openais_ring_seq") == 0x1C
    assert value_of(fams, "openais_synced") == 1
    assert fams["openais_membership_state"] == ("gauge", [('{state="OPERATIONAL"}', 1.0)])
    # every statistic counts up: a counter named _total, whatever its key's last word
    assert fams["openais_stats_retransmits_total"] == ("counter", [("", 2.0)])
    assert fams["openais_stats_tokens_received_total"] == ("counter", [("", 55.0)])
    assert fams["openais_stats_gather_entered_total"][0] == "counter"
    assert fams["openais_stats_token_losses_total"][0] == "counter"
    assert fams["openais_transport_stats_packets_in_total"][0] == "counter"
    assert fams["openais_transport_stats_bytes_in_total"] == ("counter", [("", 900.0)])
    assert fams["openais_transport_stats_gso_sends_total"][0] == "counter"
    assert fams["openais_driver_pauses_total"][0] == "counter"
    assert fams["openais_crypto_stats_auth_failures_total"] == ("counter", [("", 7.0)])
    assert fams["openais_crypto_stats_sealed_total"][0] == "counter"
    assert fams["openais_ipc_accepted_total"][0] == "counter"
    assert fams["openais_ipc_refused_total"][0] == "counter"
    assert fams["openais_routing_delivered_total"] == ("counter", [("", 40.0)])
    assert fams["openais_routing_held_total"] == ("counter", [("", 0.0)])
    # levels stay gauges
    assert fams["openais_ipc_connections"] == ("gauge", [("", 2.0)])
    assert fams["openais_ipc_queued_bytes"] == ("gauge", [("", 128.0)])
    assert fams["openais_ipc_by_service_cpg_connections"] == ("gauge", [("", 1.0)])
    assert fams["openais_driver_max_pause_ms"] == ("gauge", [("", 1200.0)])
    assert fams["openais_pending"] == ("gauge", [("", 5.0)])
    assert fams["openais_quorum_quorate"] == ("gauge", [("", 1.0)])
    assert fams["openais_quorum_expected_votes"][0] == "gauge"
    # the names operators were once told that never existed
    for wrong in ("openais_crypto_auth_failures_total", "openais_transport_packets_in_total", "openais_crypto"):
        assert wrong not in fams
    assert not any("note" in name or "flags" in name or "rings" in name for name in fams)
    assert all((kind == "counter") == name.endswith("_total") for name, (kind, _) in fams.items())


def test_missing_and_odd_keys_are_skipped():
    fams = parse_exposition(render_status({"ring_id": "garbage.zz", "stats": {"x": "y", "total": 3}, "members": 7}))
    assert set(fams) == {"openais_up", "openais_stats_total"}
    fams = parse_exposition(render_status({}))
    assert set(fams) == {"openais_up"}


def test_counter_rule_and_sanitising():
    assert is_counter("mcast_retransmits") and is_counter("errors") and is_counter("bytes_total")
    assert not is_counter("queued_bytes") and not is_counter("senders") and not is_counter("held")
    assert metric_kind(("stats", "gather_entered")) == "counter"
    assert metric_kind(("ipc", "connections")) == metric_kind(("ipc", "queued_bytes")) == "gauge"
    assert metric_kind(("driver", "max_pause_ms")) == "gauge"
    assert metric_kind(("quorum", "total_votes")) == "gauge" and metric_kind(("pending",)) == "gauge"
    assert metric_kind(("some_plugin", "frames_sent")) == "counter"
    assert metric_kind(("some_plugin", "queue_length")) == "gauge"
    assert metric_name(("crypto_stats", "auth_failures")) == "openais_crypto_stats_auth_failures_total"
    assert metric_name(("stats", "total")) == "openais_stats_total"
    assert sanitise("cpg connections/v2") == "cpg_connections_v2" and sanitise("9lives") == "_9lives"
    fams = parse_exposition(render_status({"stats": {"rx_total": 1, "rx total": 2}}))
    assert list(fams["openais_stats_rx_total"][1]) == [("", 1.0)]


def test_every_statistic_the_executive_keeps_is_a_counter():
    """The key sets of the real producers: Totem core, crypto, routing, sync, fault layer."""
    from aisexec.routing import RoutingStats
    from aisexec.sync import SyncStats
    from aisexec.totem.crypto import CryptoStats
    from aisexec.totem.srp_state import STAT_KEYS

    status = {
        "stats": dict.fromkeys(STAT_KEYS, 1),
        "crypto_stats": CryptoStats().as_dict(),
        "routing": dataclasses.asdict(RoutingStats()),
        "sync": dataclasses.asdict(SyncStats()),
        "faults": {"dropped": 0, "duplicated": 0, "delayed": 0, "blocked": 0},
    }
    fams = parse_exposition(render_status(status))
    stats = {n: kind for n, (kind, _) in fams.items() if n != "openais_up"}
    assert len(stats) == sum(len(v) for v in status.values())
    assert set(stats.values()) == {"counter"}
    assert all(n.endswith("_total") for n in stats)


def test_other_paths_get_404_and_other_methods_405(serve):
    server = serve(lambda: STATUS)
    assert http_get(server.port, "/")[0] == 404
    assert http_get(server.port, "/metrics/extra")[0] == 404
    assert http_get(server.port, "/metrics", method="POST")[0] == 405
    assert http_get(server.port, "/metrics?x=1")[0] == 200


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.1", "localhost", "not-an-ip"])
def test_non_loopback_address_is_refused(address):
    with pytest.raises(MetricsAddressError, match=r"127\.0\.0\.1|loopback"):
        MetricsServer(address, 0, dict)


def test_ipv6_loopback_url():
    server = MetricsServer("::1", 9100, dict)
    assert server.url == "http://[::1]:9100/metrics"
    with pytest.raises(ValueError, match="65535"):
        MetricsServer("127.0.0.1", 70000, dict)


def test_collect_failure_gives_500_and_server_keeps_serving(serve):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        if calls["n"] == 2:
            return ["not", "a", "dict"]
        return {"nodeid": 1}

    server = serve(flaky)
    assert http_get(server.port, "/metrics")[0] == 500
    assert http_get(server.port, "/metrics")[0] == 500
    status, _, body = http_get(server.port, "/metrics")
    assert status == 200 and value_of(parse_exposition(body.decode()), "openais_node_id") == 1
    assert (server.failures, server.scrapes) == (2, 1)


def test_stop_closes_the_port(serve):
    server = serve(lambda: STATUS)
    port = server.port
    server.stop()
    assert not server.started
    with pytest.raises(OSError), gevent.Timeout(5):
        gevent.socket.create_connection(("127.0.0.1", port))


def test_idle_client_does_not_block_other_scrapes(serve):
    server = serve(lambda: STATUS)
    idle = gevent.socket.create_connection(("127.0.0.1", server.port))
    try:
        idle.sendall(b"GET /metr")  # an unfinished request stays open
        gevent.sleep(0.01)
        assert http_get(server.port, "/metrics")[0] == 200
    finally:
        idle.close()
