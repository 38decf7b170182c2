"""Transport: what a real grpcio (C-core) client sees of the server's limits.

The ping enforcement policy (--ping-min-interval, as grpc-go's
EnforcementPolicy.MinTime): a client whose keepalive pings come faster than
allowed is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings", which grpcio
reports in the failed call and answers by doubling its keepalive time.
"""

import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import conftest

PING_MIN_INTERVAL = "100ms"
AGGRESSIVE_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 50),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def closed_for_pings(metrics_addr: str) -> float:
    body = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("server_connections_closed_total{")
               and 'reason="ping_policy"' in line)


def test_aggressive_keepalive_gets_too_many_pings(testbed_all):
    """A grpcio client pinging every 50 ms, with a health Watch open, has the
    call ended UNAVAILABLE naming too_many_pings within 10 s; the server
    counts the connection as closed for its ping policy."""
    before = closed_for_pings(testbed_all.metrics_addr)
    with grpc.insecure_channel(testbed_all.addr, options=AGGRESSIVE_KEEPALIVE) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        started = time.monotonic()
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = next(watch)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        try:
            for _ in watch:
                pass
            raise AssertionError("the watch ended without an error")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            assert "too_many_pings" in err.details(), err.details()
        assert time.monotonic() - started < 10
    assert closed_for_pings(testbed_all.metrics_addr) == before + 1


def test_keepalive_within_the_policy_is_served():
    """A client with a 300 ms keepalive (grpcio sends about one ping a
    second: it throttles) against --ping-min-interval 100ms keeps a Watch
    open for its whole 6 s deadline: no GOAWAY, nothing counted. (With the
    default 10s minimum the same client is refused in about 4 s.)"""
    tb = conftest.Testbed("all", "--ping-min-interval", PING_MIN_INTERVAL)
    try:
        options = [("grpc.keepalive_time_ms", 300), ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.max_pings_without_data", 0)]
        with grpc.insecure_channel(tb.addr, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=6)
            try:
                for _ in watch:
                    pass
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
        assert closed_for_pings(tb.metrics_addr) == 0
    finally:
        assert tb.stop() == 0
