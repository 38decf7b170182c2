"""The sync client against a live `testbed all`: publish, partial
rejection, envelope errors decoded, retries honouring RetryInfo, device
stats, pipeline watch and bearer tokens."""

import datetime
import time

import grpc
import pytest

import testbed_client as tc
from testbed.v1 import worker_pb2
from pyclient_harness import ADMIN_TOKEN, WRITE_TOKEN


def wait_device_events(client, device_id: str, count: int, timeout: float = 15.0):
    """Polls GetDeviceStats until the worker has applied `count` events of
    the device (processing is asynchronous), and returns the response."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stats = tc.device_stats(client, device_id)
            if stats.totals.event_count >= count:
                return stats
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{device_id}: {count} events not processed within {timeout} s")
        time.sleep(0.05)


def test_publish_then_device_stats(testbed):
    """A batch of three metrics is accepted whole, and GetDeviceStats then
    counts exactly three events with the batch's labels and metric sum."""
    with tc.connect(testbed.addr) as client:
        events = [tc.metric_event(f"py-sync-{i}", "py-dev-1", "fan_speed", 10.0 * (i + 1), "1",
                                  labels={"arch": "arm64", "zone": "lab"}) for i in range(3)]
        reply = tc.publish(client, events)
        assert (reply.accepted_count, list(reply.rejections), reply.duplicate_count) == (3, [], 0)
        stats = wait_device_events(client, "py-dev-1", 3)
        assert stats.totals.event_count == 3
        assert dict(stats.device.labels) == {"arch": "arm64", "zone": "lab"}
        [fan] = [m for m in stats.totals.metrics if m.name == "fan_speed"]
        assert (fan.unit, fan.value.count, fan.value.sum) == ("1", 3, 60.0)


def test_republished_batch_counts_once(testbed):
    """The same batch sent twice (a retry) is acknowledged as duplicates."""
    with tc.connect(testbed.addr) as client:
        events = [tc.token_event("py-dup-1", "py-dev-dup", "llama-3-8b", "team-a",
                                 prompt_tokens=12, completion_tokens=30,
                                 latency=datetime.timedelta(milliseconds=250))]
        assert tc.publish(client, events).accepted_count == 1
        again = tc.publish(client, events)
        assert (again.accepted_count, again.duplicate_count) == (1, 1)


def test_partial_rejection_lists_the_bad_event(testbed):
    """One invalid event (utilization 2.0) is rejected by index and field;
    the valid one of the same batch is accepted."""
    with tc.connect(testbed.addr) as client:
        reply = tc.publish(client, [
            tc.gpu_event("py-gpu-ok", "py-dev-2", 0.5),
            tc.gpu_event("py-gpu-bad", "py-dev-2", 2.0),
        ])
        assert reply.accepted_count == 1
        [rejection] = reply.rejections
        assert (rejection.index, rejection.event_id, rejection.field) == (1, "py-gpu-bad", "events[1].gpu.utilization")
        assert rejection.reason


def test_envelope_error_decodes_bad_request_and_is_not_retried(testbed):
    """An empty batch fails INVALID_ARGUMENT whose google.rpc.BadRequest
    names the field `events`; publish raises at once, without a retry."""
    waits: list[float] = []
    with tc.connect(testbed.addr) as client:
        with pytest.raises(grpc.RpcError) as raised:
            tc.publish(client, [], sleep=waits.append)
    details = tc.error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.field_violations] == ["events"]
    assert details.field_violations[0].description
    assert waits == []


def test_backpressure_decodes_retry_info(testbed_tight_backlog):
    """Over the backlog limit, Publish is RESOURCE_EXHAUSTED with the
    server's RetryInfo delay (300 ms) decoded; with one attempt allowed,
    publish gives up with that error."""
    with tc.connect(testbed_tight_backlog.addr) as client:
        client.worker.Pause(worker_pb2.PauseRequest(reason="python client test"), timeout=5)
        try:
            first = tc.publish(client, [tc.metric_event(f"py-bp-{i}", "py-dev-bp", "x", 1.0) for i in range(3)])
            assert first.accepted_count == 3
            with pytest.raises(grpc.RpcError) as raised:
                tc.publish(client, [tc.metric_event("py-bp-refused", "py-dev-bp", "x", 1.0)],
                           policy=tc.RetryPolicy(max_attempts=1))
            details = tc.error_details(raised.value)
            assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details.retry_delay == 0.3
        finally:
            client.worker.Resume(worker_pb2.ResumeRequest(), timeout=5)


def test_publish_retries_after_the_retry_info_delay(testbed_tight_backlog):
    """Refused for backpressure, publish waits the server's 300 ms (longer
    than its own 100 ms backoff) and succeeds once the worker drains."""
    waits: list[float] = []
    with tc.connect(testbed_tight_backlog.addr) as client:
        client.worker.Pause(worker_pb2.PauseRequest(reason="python client test"), timeout=5)
        resumed = False

        def sleep(seconds: float) -> None:
            nonlocal resumed
            waits.append(seconds)
            if not resumed:
                client.worker.Resume(worker_pb2.ResumeRequest(), timeout=5)
                resumed = True
            time.sleep(seconds)

        try:
            tc.publish(client, [tc.metric_event(f"py-rt-{i}", "py-dev-rt", "x", 1.0) for i in range(3)])
            reply = tc.publish(client, [tc.metric_event("py-rt-late", "py-dev-rt", "x", 1.0)],
                               policy=tc.RetryPolicy(max_attempts=20, initial_backoff=0.1, max_backoff=0.1),
                               sleep=sleep)
        finally:
            client.worker.Resume(worker_pb2.ResumeRequest(), timeout=5)
    assert reply.accepted_count == 1
    assert waits and all(w == 0.3 for w in waits), waits


def test_watch_pipeline_stats_streams_increasing_times(testbed):
    """WatchPipelineStats at 100 ms gives a first message at once and a
    later one; leaving the loop cancels the call."""
    with tc.connect(testbed.addr) as client:
        times = []
        for stats in tc.watch_pipeline_stats(client, interval=datetime.timedelta(milliseconds=100)):
            times.append(stats.time.ToDatetime())
            if len(times) == 2:
                break
    assert len(times) == 2 and times[1] > times[0]


def test_bearer_token_is_sent(testbed_auth):
    """Without a token Publish is UNAUTHENTICATED (ErrorInfo TOKEN_MISSING);
    with a write token it is accepted; an admin RPC with the write token is
    PERMISSION_DENIED, with the admin token it passes."""
    event = tc.metric_event("py-auth-1", "py-dev-auth", "x", 1.0)
    with tc.connect(testbed_auth.addr) as anonymous:
        with pytest.raises(grpc.RpcError) as raised:
            tc.publish(anonymous, [event])
    details = tc.error_details(raised.value)
    assert (details.code, details.reason, details.domain) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING", "testbed")
    with tc.connect(f"http://{testbed_auth.addr}", token=WRITE_TOKEN) as writer:
        assert tc.publish(writer, [event]).accepted_count == 1
        with pytest.raises(grpc.RpcError) as raised:
            writer.worker.Pause(worker_pb2.PauseRequest(), timeout=5)
        assert tc.error_details(raised.value).reason == "ROLE_INSUFFICIENT"
    with tc.connect(testbed_auth.addr, token=ADMIN_TOKEN) as admin:
        admin.worker.Resume(worker_pb2.ResumeRequest(), timeout=5)


def test_dns_target_with_round_robin(testbed):
    """A `dns:///` target (resolved, balanced round robin) publishes and
    reads like a plain one."""
    port = testbed.addr.rsplit(":", 1)[1]
    with tc.connect(f"dns:///127.0.0.1:{port}") as client:
        reply = tc.publish(client, [tc.metric_event("py-dns-1", "py-dev-dns", "x", 2.5)])
        assert reply.accepted_count == 1
        stats = wait_device_events(client, "py-dev-dns", 1)
        assert stats.totals.event_count == 1


def test_mutual_tls(testbed_mtls):
    """Over mutual TLS, with the CA and a client certificate, a publish is
    accepted; without the client certificate the server refuses the
    connection (UNAVAILABLE)."""
    pki = testbed_mtls.pki
    url = "https://localhost:" + testbed_mtls.addr.rsplit(":", 1)[1]
    client_cert, client_key = pki["client"]
    with tc.connect(url, root_certificates=pki["ca"], certificate_chain=client_cert,
                    private_key=client_key) as client:
        reply = tc.publish(client, [tc.metric_event("py-tls-1", "py-dev-tls", "x", 1.0, "1")])
        assert reply.accepted_count == 1
    with tc.connect(url, root_certificates=pki["ca"]) as anonymous:
        with pytest.raises(grpc.RpcError) as refused:
            tc.publish(anonymous, [tc.metric_event("py-tls-2", "py-dev-tls", "x", 1.0, "1")],
                       policy=tc.RetryPolicy(max_attempts=1), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
