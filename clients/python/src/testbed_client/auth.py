"""Interceptors that add ``authorization: Bearer <token>`` to every call.

Plain interceptors rather than ``grpc.metadata_call_credentials``: call
credentials need a TLS channel, and the testbed is often reached over
plaintext on a trusted network (README, "Security").
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import grpc
import grpc.aio


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


class BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sync interceptor sending the bearer token on every kind of call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._token),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable, details, requests):  # type: ignore[override]
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable, details, requests):  # type: ignore[override]
        return continuation(self._details(details), requests)


def _aio_details(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*_with_token(details.metadata, token)),
        details.credentials,
        details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return await continuation(_aio_details(details, self._token), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return await continuation(_aio_details(details, self._token), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[override]
        return await continuation(_aio_details(details, self._token), requests)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[override]
        return await continuation(_aio_details(details, self._token), requests)


def aio_bearer_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The ``grpc.aio`` interceptors sending the bearer token, one per call
    kind (``grpc.aio`` dispatches on the interceptor's class)."""
    return [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
