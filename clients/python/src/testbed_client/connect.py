"""Connecting to a testbed: one channel, the service stubs on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import grpc
import grpc.aio

from testbed.v1 import ingest_pb2_grpc, query_pb2_grpc, worker_pb2_grpc
from testbed_client.auth import BearerInterceptor, aio_bearer_interceptors


@dataclass(frozen=True)
class _Target:
    address: str
    tls: bool
    options: list[tuple[str, Any]]


def _parse(url: str, tls: bool | None) -> _Target:
    """``http://h:p`` is plaintext, ``https://h:p`` TLS; ``dns:///h:p``
    resolves every address and spreads calls over them (round robin, as the
    simulator does); a bare ``h:p`` is plaintext unless ``tls`` says so."""
    options: list[tuple[str, Any]] = []
    if url.startswith("https://"):
        address, secure = url[len("https://"):], True
    elif url.startswith("http://"):
        address, secure = url[len("http://"):], False
    else:
        address, secure = url, False
        if url.startswith("dns:"):
            options.append(("grpc.lb_policy_name", "round_robin"))
    if tls is not None:
        secure = tls
    return _Target(address.rstrip("/"), secure, options)


class Client:
    """A sync connection: ``channel`` plus the stubs ``ingest``, ``query``
    and ``worker``. Close it (or use it as a context manager) when done."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        self.query = query_pb2_grpc.QueryServiceStub(channel)
        self.worker = worker_pb2_grpc.WorkerControlServiceStub(channel)

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """A ``grpc.aio`` connection, with the same stubs as ``Client``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        self.query = query_pb2_grpc.QueryServiceStub(channel)
        self.worker = worker_pb2_grpc.WorkerControlServiceStub(channel)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def connect(
    url: str,
    *,
    token: str | None = None,
    tls: bool | None = None,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> Client:
    """Opens a sync channel to ``url`` (see ``_parse`` for the forms).

    ``token`` is sent as ``authorization: Bearer <token>`` on every call;
    ``root_certificates`` (PEM) replaces the system roots for TLS;
    ``certificate_chain`` and ``private_key`` (PEM) are this client's
    certificate for servers that require one (``--tls-client-ca``: mutual
    TLS); ``options`` are extra gRPC channel options."""
    target = _parse(url, tls)
    opts = [*target.options, *options]
    if target.tls:
        channel = grpc.secure_channel(target.address, grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain), opts)
    else:
        channel = grpc.insecure_channel(target.address, opts)
    if token:
        channel = grpc.intercept_channel(channel, BearerInterceptor(token))
    return Client(channel)


def aconnect(
    url: str,
    *,
    token: str | None = None,
    tls: bool | None = None,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncClient:
    """The ``grpc.aio`` form of ``connect``; call it inside a running event
    loop."""
    target = _parse(url, tls)
    opts = [*target.options, *options]
    interceptors = aio_bearer_interceptors(token) if token else None
    if target.tls:
        channel = grpc.aio.secure_channel(
            target.address, grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain), opts, interceptors=interceptors
        )
    else:
        channel = grpc.aio.insecure_channel(target.address, opts, interceptors=interceptors)
    return AsyncClient(channel)
