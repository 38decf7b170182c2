"""Interop: health as the kubelet probes it (grpc.health.v1 Check, which
kubelet's gRPC probe calls with the probe's `service`, and Watch).

`""` is liveness: SERVING while the process runs, whatever Redis does. Each
registered service name is readiness: NOT_SERVING while the event store is
unreachable, SERVING again once it is back. The test starts its own
redis-server on a free port (never 127.0.0.1:6379) and stops it by pid.
"""

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import conftest

READINESS = ["testbed.v1.IngestService", "testbed.v1.QueryService",
             "testbed.v1.WorkerControlService"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A redis-server of this test's own, on a fixed port across restarts."""

    def __init__(self):
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="testbed-redis-")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@pytest.fixture(scope="module")
def redis_testbed():
    redis = Redis()
    redis.start()
    try:
        tb = conftest.Testbed("all", "--redis-url", f"redis://127.0.0.1:{redis.port}",
                              "--health-interval", "200ms", grace="2s")
        try:
            for service in READINESS:
                tb.wait_serving(service)
            yield redis, tb
        finally:
            assert tb.stop() == 0
    finally:
        redis.close()


def check(channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_status(channel, service: str, want: int, timeout: float = 20.0) -> None:
    """Polls Check until `service` answers `want` (each service probes the
    store on its own, so they flip within one --health-interval of each other)."""
    deadline = time.monotonic() + timeout
    while (got := check(channel, service)) != want:
        assert time.monotonic() < deadline, f"{service!r} stayed {got}, want {want}"
        time.sleep(0.05)


def test_check_every_registered_service_and_liveness(redis_testbed):
    """Check answers SERVING for "" and for each registered service name."""
    _, tb = redis_testbed
    with grpc.insecure_channel(tb.addr) as channel:
        for service in ["", *READINESS]:
            assert check(channel, service) == SERVING, service


def test_watch_follows_redis_down_and_back(redis_testbed):
    """Watch sees SERVING, NOT_SERVING once Redis is killed, SERVING once it
    is restarted; "" (liveness) stays SERVING throughout."""
    redis, tb = redis_testbed
    service = "testbed.v1.IngestService"
    with grpc.insecure_channel(tb.addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        liveness = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        seen: "queue.Queue[int]" = queue.Queue()
        live: "queue.Queue[int]" = queue.Queue()

        def read(stream, into):
            try:
                for reply in stream:
                    into.put(reply.status)
            except grpc.RpcError:
                pass

        readers = [threading.Thread(target=read, args=(watch, seen), daemon=True),
                   threading.Thread(target=read, args=(liveness, live), daemon=True)]
        for reader in readers:
            reader.start()

        def next_status(timeout: float = 20.0) -> int:
            return seen.get(timeout=timeout)

        assert next_status() == SERVING
        redis.stop()
        assert next_status() == NOT_SERVING
        for name in READINESS:
            wait_status(channel, name, NOT_SERVING)
        assert check(channel, "") == SERVING
        redis.start()
        assert next_status() == SERVING
        for name in READINESS:
            wait_status(channel, name, SERVING)
        assert check(channel, "") == SERVING
        watch.cancel()
        liveness.cancel()
        for reader in readers:
            reader.join(timeout=5)
        statuses = [live.get_nowait() for _ in range(live.qsize())]
        assert statuses and all(s == SERVING for s in statuses), statuses
