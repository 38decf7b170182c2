"""Interop: the real client programs users run, against `testbed all`.

grpcurl 1.8.6 (reflection v1alpha only), `buf curl` (reflection v1) and
Python grpcio (health checking, reflection) must all see the same services
and descriptions: each tool describes and calls every service with a JSON
body, and follows a server-streaming Watch until its own time limit ends it.
"""

import json
import shutil
import subprocess

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import tool

SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "testbed.v1.IngestService",
    "testbed.v1.QueryService",
    "testbed.v1.WorkerControlService",
]


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


def grpcurl(addr: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(tool("grpcurl"), "-plaintext", *args[:-1], addr, *args[-1:], check=check) \
        if args and args[0] == "-d" else run(tool("grpcurl"), "-plaintext", addr, *args, check=check)


def test_grpcurl_lists_every_service(testbed_all):
    """`grpcurl list` (reflection v1alpha) names exactly the served services."""
    out = run(tool("grpcurl"), "-plaintext", testbed_all.addr, "list").stdout
    assert out.split() == SERVICES


def test_grpcurl_describes_ingest_with_comments(testbed_all):
    """`grpcurl describe` shows both ingest RPCs and the proto comments."""
    out = run(tool("grpcurl"), "-plaintext", testbed_all.addr, "describe",
              "testbed.v1.IngestService").stdout
    assert "rpc Publish ( .testbed.v1.PublishRequest ) returns ( .testbed.v1.PublishResponse );" in out
    assert ("rpc PublishStream ( stream .testbed.v1.PublishStreamRequest ) "
            "returns ( stream .testbed.v1.PublishStreamResponse );") in out
    assert "// Appends one batch of events." in out


def test_grpcurl_describes_error_details_and_wkt(testbed_all):
    """Reflection also describes google.rpc error details and well-known types."""
    for symbol, field in [("google.rpc.BadRequest", "field_violations"),
                          ("google.rpc.RetryInfo", "retry_delay"),
                          ("google.protobuf.Timestamp", "seconds"),
                          ("testbed.v1.Event", "observed_at")]:
        out = run(tool("grpcurl"), "-plaintext", testbed_all.addr, "describe", symbol).stdout
        assert f"{symbol} is a message" in out and field in out, out


def test_grpcurl_health_check(testbed_all):
    """grpcurl's health call reports SERVING for the process and each service."""
    for service in ["", "testbed.v1.IngestService", "testbed.v1.WorkerControlService",
                    "testbed.v1.QueryService"]:
        out = run(tool("grpcurl"), "-plaintext", "-d", json.dumps({"service": service}),
                  testbed_all.addr, "grpc.health.v1.Health/Check").stdout
        assert json.loads(out) == {"status": "SERVING"}, service


def test_buf_curl_lists_and_calls_via_reflection_v1(testbed_all):
    """`buf curl` (reflection v1) lists the methods and calls health."""
    base = f"http://{testbed_all.addr}"
    out = run(tool("buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
              "--list-methods", base).stdout.split()
    for method in ["testbed.v1.IngestService/Publish", "testbed.v1.IngestService/PublishStream",
                   "testbed.v1.QueryService/GetPipelineStats",
                   "testbed.v1.WorkerControlService/Pause"]:
        assert method in out, out
    reply = run(tool("buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                "-d", '{"service":"testbed.v1.QueryService"}',
                f"{base}/grpc.health.v1.Health/Check").stdout
    assert json.loads(reply) == {"status": "SERVING"}


def test_grpcio_health_checking_client(testbed_all):
    """Python grpcio's health stub sees SERVING, and NOT_FOUND for an unknown service."""
    with grpc.insecure_channel(testbed_all.addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="testbed.v1.IngestService"),
                           timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
            raise AssertionError("unknown service must be NOT_FOUND")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND


def test_grpcio_reflection_client_resolves_services(testbed_all):
    """grpcio-reflection's descriptor database resolves our services and messages."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    from google.protobuf.descriptor_pool import DescriptorPool

    with grpc.insecure_channel(testbed_all.addr) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert sorted(db.get_services()) == SERVICES
        pool = DescriptorPool(db)
        service = pool.FindServiceByName("testbed.v1.QueryService")
        assert [m.name for m in service.methods] == [
            "GetDeviceStats", "ListDevices", "TopDevices", "GetTokenUsage",
            "GetPipelineStats", "WatchPipelineStats", "GetRunStats",
        ]
        event = pool.FindMessageTypeByName("testbed.v1.Event")
        assert [o.name for o in event.oneofs] == ["payload"]


def test_grpcurl_shows_rich_error_details(testbed_all):
    """An invalid batch is INVALID_ARGUMENT, and grpcurl decodes the
    google.rpc.BadRequest details through reflection."""
    proc = run(tool("grpcurl"), "-plaintext", "-d", "{}", testbed_all.addr,
               "testbed.v1.IngestService/Publish", check=False)
    expect_bad_request(proc)


def expect_bad_request(proc):
    """grpcurl failed with INVALID_ARGUMENT and the decoded BadRequest
    details of an empty batch (field `events`)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Code: InvalidArgument" in out, out
    assert "type.googleapis.com/google.rpc.BadRequest" in out, out
    assert '"field":"events"' in out.replace(" ", ""), out


def test_grpcurl_publishes_and_reads_worker_status(testbed_all):
    """A batch published with grpcurl is accepted (one rejected by index), and
    GetStatus answers with the group figures."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"events": [
        {"event_id": "interop-1", "device_id": "pi-01", "observed_at": now,
         "labels": {"arch": "armv7"}, "metric": {"name": "fan", "value": 3, "unit": "1"}},
        {"event_id": "interop-2", "device_id": "", "observed_at": now,
         "metric": {"name": "fan", "value": 3}},
    ]}
    out = run(tool("grpcurl"), "-plaintext", "-d", json.dumps(body), testbed_all.addr,
              "testbed.v1.IngestService/Publish").stdout
    reply = json.loads(out)
    assert reply["acceptedCount"] == 1
    assert reply["rejections"][0]["index"] == 1
    assert reply["rejections"][0]["field"] == "events[1].device_id"
    status = json.loads(run(tool("grpcurl"), "-plaintext", "-d", "{}", testbed_all.addr,
                            "testbed.v1.WorkerControlService/GetStatus").stdout)
    assert len(status["group"]["partitions"]) == 4


def test_metrics_endpoint_passes_promtool(testbed_all):
    """GET /metrics is valid Prometheus text under the real promtool, and
    carries the worker's processed counter once events flowed."""
    import time
    import urllib.request
    test_grpcurl_publishes_and_reads_worker_status(testbed_all)
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://{testbed_all.metrics_addr}/metrics", timeout=5).read().decode()
        if "worker_events_processed_total{" in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "worker_events_processed_total{" in text, text[:2000]
    assert "rpc_server_duration_seconds_bucket{" in text
    assert 'host_arch="' in text and 'service_name="testbed"' in text
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                           input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def json_stream(text: str) -> list:
    """The JSON messages grpcurl and buf curl print one after another."""
    decoder, messages, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        message, end = decoder.raw_decode(text, pos)
        messages.append(message)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return messages


def publish_body(prefix: str) -> dict:
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"events": [{"event_id": f"{prefix}-1", "device_id": f"{prefix}-dev",
                        "observed_at": now, "metric": {"name": "fan", "value": 1}}]}


def test_grpcurl_describes_every_service_and_a_message(testbed_all):
    """`grpcurl describe` of each testbed service lists its RPCs, and of a
    request message its fields."""
    expected = {
        "testbed.v1.IngestService": ["Publish", "PublishStream"],
        "testbed.v1.QueryService": ["GetDeviceStats", "ListDevices", "TopDevices",
                                    "GetTokenUsage", "GetPipelineStats",
                                    "WatchPipelineStats", "GetRunStats"],
        "testbed.v1.WorkerControlService": ["GetStatus", "WatchStatus", "Pause", "Resume",
                                            "SetConcurrency"],
        "grpc.health.v1.Health": ["Check", "Watch"],
    }
    for service, methods in expected.items():
        out = run(tool("grpcurl"), "-plaintext", testbed_all.addr, "describe", service).stdout
        assert f"{service} is a service" in out, out
        for method in methods:
            assert f"rpc {method} (" in out, (service, method, out)
    out = run(tool("grpcurl"), "-plaintext", testbed_all.addr, "describe",
              "testbed.v1.PublishRequest").stdout
    assert "testbed.v1.PublishRequest is a message" in out, out
    assert "repeated .testbed.v1.Event events = 1;" in out, out


def test_grpcurl_unary_call_with_json_body_to_each_service(testbed_all):
    """A JSON-bodied unary call answers on every service (Ingest Publish,
    Query GetPipelineStats, WorkerControl GetStatus, Health Check)."""
    def call(method: str, body: dict) -> dict:
        return json.loads(run(tool("grpcurl"), "-plaintext", "-d", json.dumps(body),
                              testbed_all.addr, method).stdout)

    assert call("testbed.v1.IngestService/Publish",
                publish_body("grpcurl-unary"))["acceptedCount"] == 1
    stats = call("testbed.v1.QueryService/GetPipelineStats", {"window": "300s"})
    assert "time" in stats["stats"], stats
    status = call("testbed.v1.WorkerControlService/GetStatus", {})
    assert len(status["group"]["partitions"]) == 4, status
    assert call("grpc.health.v1.Health/Check", {"service": ""}) == {"status": "SERVING"}


def test_grpcurl_watch_streams_until_max_time(testbed_all):
    """A server-streaming WatchPipelineStats prints several messages and is
    ended by grpcurl's -max-time (DeadlineExceeded, a non-zero exit)."""
    proc = run(tool("grpcurl"), "-plaintext", "-max-time", "1.5", "-d", '{"interval":"0.2s"}',
               testbed_all.addr, "testbed.v1.QueryService/WatchPipelineStats", check=False)
    assert proc.returncode != 0
    assert "DeadlineExceeded" in proc.stderr, proc.stderr
    messages = json_stream(proc.stdout)
    assert len(messages) >= 2, proc.stdout
    assert all("time" in m["stats"] for m in messages), messages


def buf_curl(addr: str, method: str, body: dict, *extra: str,
             check: bool = True) -> subprocess.CompletedProcess:
    return run(tool("buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *extra,
               "-d", json.dumps(body), f"http://{addr}/{method}", check=check)


def test_buf_curl_calls_each_service_via_reflection(testbed_all):
    """`buf curl` (schema from reflection v1) calls one RPC of each service."""
    addr = testbed_all.addr
    reply = json.loads(buf_curl(addr, "testbed.v1.IngestService/Publish",
                                publish_body("buf-unary")).stdout)
    assert reply["acceptedCount"] == 1, reply
    reply = json.loads(buf_curl(addr, "testbed.v1.QueryService/GetPipelineStats",
                                {"window": "300s"}).stdout)
    assert "time" in reply["stats"], reply
    reply = json.loads(buf_curl(addr, "testbed.v1.WorkerControlService/GetStatus", {}).stdout)
    assert len(reply["group"]["partitions"]) == 4, reply
    reply = json.loads(buf_curl(addr, "grpc.health.v1.Health/Check", {"service": ""}).stdout)
    assert reply == {"status": "SERVING"}


def test_buf_curl_server_streaming_watch(testbed_all):
    """`buf curl` prints several WatchPipelineStats messages until its
    --timeout ends the stream (deadline_exceeded)."""
    proc = buf_curl(testbed_all.addr, "testbed.v1.QueryService/WatchPipelineStats",
                    {"interval": "0.2s"}, "--timeout", "1.5s", check=False)
    assert proc.returncode != 0
    assert "deadline_exceeded" in proc.stderr, proc.stderr
    messages = json_stream(proc.stdout)
    assert len(messages) >= 2, proc.stdout
    assert all("time" in m["stats"] for m in messages), messages
