"""Python client for the Testbed's gRPC services (``testbed.v1``).

The generated code lives in the ``testbed.v1`` package (``*_pb2`` messages
with ``.pyi`` stubs, ``*_pb2_grpc`` stubs), produced by ``clients/generate``
from ``proto/``; this package is the small typed layer on top of it. It owns
connecting, bearer tokens, retries and error decoding; it does not own the
contracts (``proto/``) nor re-implement any server rule.

Everything has a sync form and a ``grpc.aio`` form (the ``a``-prefixed
names).

# Layout
- ``connect``: ``connect`` / ``aconnect`` a target (``host:port``,
  ``http://``, ``https://`` for TLS, ``dns:///`` for balancing) into a
  ``Client`` / ``AsyncClient`` holding the channel and the service stubs.
- ``auth``: the interceptors that send ``authorization: Bearer <token>``.
- ``events``: builders of ``Event`` messages (metric, GPU, token usage).
- ``errors``: ``ErrorDetails`` decoded from a failed call's
  ``grpc-status-details-bin`` or from a ``google.rpc.Status`` message
  (``BadRequest`` field violations, ``RetryInfo``, ``ErrorInfo``, ...).
- ``retry``: ``RetryPolicy`` and ``publish`` / ``apublish``: one batch,
  retried on UNAVAILABLE and RESOURCE_EXHAUSTED with backoff, waiting at
  least the server's ``RetryInfo`` delay.
- ``query``: ``device_stats`` and ``watch_pipeline_stats`` (and their
  ``a``-forms).
"""

from testbed_client.connect import AsyncClient, Client, aconnect, connect
from testbed_client.errors import ErrorDetails, FieldViolation, error_details, status_details
from testbed_client.events import gpu_event, metric_event, token_event
from testbed_client.query import (
    adevice_stats,
    awatch_pipeline_stats,
    device_stats,
    watch_pipeline_stats,
)
from testbed_client.retry import RetryPolicy, apublish, publish

__all__ = [
    "AsyncClient",
    "Client",
    "ErrorDetails",
    "FieldViolation",
    "RetryPolicy",
    "aconnect",
    "adevice_stats",
    "apublish",
    "awatch_pipeline_stats",
    "connect",
    "device_stats",
    "error_details",
    "gpu_event",
    "metric_event",
    "publish",
    "status_details",
    "token_event",
    "watch_pipeline_stats",
]
