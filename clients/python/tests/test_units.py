"""The helper layer's pure parts, without a server: error decoding from a
google.rpc.Status, the retry delays, and target parsing."""

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

import testbed_client as tc
from testbed_client.connect import _parse


def _any(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def test_status_details_decodes_each_kind():
    """BadRequest, RetryInfo, ErrorInfo and PreconditionFailure land in
    their fields; an unknown detail is kept in `other`."""
    status = status_pb2.Status(code=8, message="busy", details=[
        _any(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="events", description="empty")])),
        _any(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))),
        _any(error_details_pb2.ErrorInfo(reason="R", domain="testbed", metadata={"k": "v"})),
        _any(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(type="STALE_SEQUENCE")])),
        _any(error_details_pb2.Help()),
    ])
    details = tc.status_details(status)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.message == "busy"
    assert details.field_violations == [tc.FieldViolation("events", "empty")]
    assert details.retry_delay == 1.5
    assert (details.reason, details.domain, details.metadata) == ("R", "testbed", {"k": "v"})
    assert details.precondition_types == ["STALE_SEQUENCE"]
    assert len(details.other) == 1


def test_retry_delay_is_backoff_or_retry_info_whichever_is_longer():
    """Backoff doubles from 0.1 s up to the cap; a server delay is a floor."""
    policy = tc.RetryPolicy(initial_backoff=0.1, max_backoff=0.4, jitter=0.0)
    none = tc.ErrorDetails(code=grpc.StatusCode.UNAVAILABLE, message="")
    assert [policy.delay(n, none) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.4]
    server = tc.ErrorDetails(code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="", retry_delay=0.3)
    assert [policy.delay(n, server) for n in range(1, 4)] == [0.3, 0.3, 0.4]


def test_targets_parse_to_address_and_tls():
    """http:// is plaintext, https:// TLS, dns:/// balanced round robin."""
    assert (_parse("http://h:1", None).address, _parse("http://h:1", None).tls) == ("h:1", False)
    assert (_parse("https://h:1/", None).address, _parse("https://h:1", None).tls) == ("h:1", True)
    assert _parse("h:1", True).tls is True
    dns = _parse("dns:///svc:50051", None)
    assert (dns.address, dns.tls, dns.options) == ("dns:///svc:50051", False,
                                                   [("grpc.lb_policy_name", "round_robin")])
