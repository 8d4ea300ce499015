"""The Prometheus endpoint: exposition format, routing, loopback-only binding, resilience to collect() errors."""

from __future__ import annotations

import re

import gevent
import gevent.socket
import pytest

from aisexec.metrics import MetricsAddressError, MetricsServer, is_counter, render_status, sanitise

STATUS = {
    "nodeid": 3,
    "state": "OPERATIONAL",
    "ring_id": "1.1c",
    "members": [1, 2, 3],
    "synced": True,
    "stats": {"mcast_tx": 10, "mcast_retransmits": 2, "orf_token_received": 55, "memb_join_sent": 4},
    "transport": {"rx_dropped": 1, "rx_bytes": 900},
    "crypto": {"auth_failures": 7},
    "ipc": {"connections": 2, "queued_bytes": 128, "by-service": {"cpg connections": 1}},
    "routing": {"delivered": 40, "held": 0, "note": "text is skipped"},
    "pending": 5,
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
    assert fams["openais_stats_mcast_retransmits_total"] == ("counter", [("", 2.0)])
    assert fams["openais_stats_orf_token_received_total"][0] == "counter"
    assert fams["openais_stats_memb_join_sent_total"][0] == "counter"
    assert fams["openais_stats_mcast_tx"] == ("gauge", [("", 10.0)])
    assert fams["openais_transport_rx_dropped_total"][0] == "counter"
    assert fams["openais_transport_rx_bytes"][0] == "gauge"
    assert value_of(fams, "openais_crypto_auth_failures_total") == 7
    assert value_of(fams, "openais_ipc_queued_bytes") == 128
    assert value_of(fams, "openais_ipc_by_service_cpg_connections") == 1
    assert fams["openais_routing_delivered_total"] == ("counter", [("", 40.0)])
    assert value_of(fams, "openais_routing_held") == 0
    assert value_of(fams, "openais_pending") == 5
    assert not any("note" in name for name in fams)
    assert all(kind == "counter" for name, (kind, _) in fams.items() if name.endswith("_total"))


def test_missing_and_odd_keys_are_skipped():
    fams = parse_exposition(render_status({"ring_id": "garbage.zz", "stats": {"x": "y", "total": 3}, "members": 7}))
    assert set(fams) == {"openais_up", "openais_stats_total"}
    fams = parse_exposition(render_status({}))
    assert set(fams) == {"openais_up"}


def test_counter_rule_and_sanitising():
    assert is_counter("mcast_retransmits") and is_counter("errors") and is_counter("bytes_total")
    assert not is_counter("queued_bytes") and not is_counter("senders") and not is_counter("held")
    assert sanitise("cpg connections/v2") == "cpg_connections_v2" and sanitise("9lives") == "_9lives"
    fams = parse_exposition(render_status({"stats": {"rx_total": 1, "rx total": 2}}))
    assert list(fams["openais_stats_rx_total"][1]) == [("", 1.0)]


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
