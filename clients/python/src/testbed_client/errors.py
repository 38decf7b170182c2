"""Rich error details (``google.rpc``) of a failed call or a refused batch.

The server puts a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer of a failed call, and in ``PublishStreamResponse.status`` for a
batch refused on a stream; both decode to one ``ErrorDetails``. Decoded
here from the trailer directly (not grpcio-status), so the sync and
``grpc.aio`` errors take the same path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One ``google.rpc.BadRequest`` field violation: the request field's
    path (e.g. ``events``) and why it is wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """The code, message and decoded details of an error.

    ``retry_delay`` is the ``RetryInfo`` delay in seconds (``None`` when the
    server sent none); ``reason``, ``domain`` and ``metadata`` come from an
    ``ErrorInfo``; ``precondition_types`` from a ``PreconditionFailure``.
    Details of other types are kept, undecoded, in ``other``."""

    code: grpc.StatusCode
    message: str
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_delay: float | None = None
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    precondition_types: list[str] = field(default_factory=list)
    other: list[Any] = field(default_factory=list)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_details(status: status_pb2.Status) -> ErrorDetails:
    """Decodes a ``google.rpc.Status`` message, e.g. the ``status`` of a
    ``PublishStreamResponse``."""
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    info: error_details_pb2.ErrorInfo | None = None
    preconditions: list[str] = []
    other: list[Any] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        error_info = error_details_pb2.ErrorInfo()
        pre = error_details_pb2.PreconditionFailure()
        if detail.Unpack(bad):
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Unpack(retry):
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Unpack(error_info):
            info = error_info
        elif detail.Unpack(pre):
            preconditions.extend(v.type for v in pre.violations)
        else:
            other.append(detail)
    return ErrorDetails(
        code=_CODES.get(status.code, grpc.StatusCode.UNKNOWN),
        message=status.message,
        field_violations=violations,
        retry_delay=retry_delay,
        reason=info.reason if info else None,
        domain=info.domain if info else None,
        metadata=dict(info.metadata) if info else {},
        precondition_types=preconditions,
        other=other,
    )


def error_details(err: grpc.RpcError) -> ErrorDetails:
    """Decodes a failed call's error (sync ``grpc.RpcError`` or
    ``grpc.aio.AioRpcError``); without a details trailer, only the code and
    message are set."""
    code = err.code()  # type: ignore[attr-defined]
    message = err.details() or ""  # type: ignore[attr-defined]
    for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == _DETAILS_KEY:
            # The call's code and message are authoritative (the trailer
            # repeats them).
            return dataclasses.replace(
                status_details(status_pb2.Status.FromString(value)), code=code, message=message)
    return ErrorDetails(code=code, message=message)
