"""Publishing one batch with retries that stay exact.

Retried codes are the two the server documents as "nothing was appended,
retry": UNAVAILABLE (store unreachable) and RESOURCE_EXHAUSTED
(backpressure, with a ``google.rpc.RetryInfo`` delay). Every attempt sends
the very same request, so the server's dedupe (by ``producer_id`` and
``sequence`` when set, else by ``event_id``) makes a retry of a batch that
was in fact appended count once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import grpc

from testbed.v1 import event_pb2, ingest_pb2
from testbed_client.connect import AsyncClient, Client
from testbed_client.errors import ErrorDetails, error_details


@dataclass(frozen=True)
class RetryPolicy:
    """How ``publish`` retries.

    The n-th retry waits ``initial_backoff * multiplier**(n-1)`` seconds
    (capped at ``max_backoff``, spread by +/- ``jitter`` so clients that
    failed together do not retry together), or the server's ``RetryInfo``
    delay when that is longer: the server's figure is a floor, never cut
    short. ``max_attempts`` counts the first call."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retry_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
    )

    def delay(self, retry: int, details: ErrorDetails) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based)."""
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        backoff *= random.uniform(1 - self.jitter, 1 + self.jitter)
        if details.retry_delay is not None:
            return max(details.retry_delay, backoff)
        return backoff


def _request(events: Iterable[event_pb2.Event], producer_id: str, sequence: int) -> ingest_pb2.PublishRequest:
    return ingest_pb2.PublishRequest(events=list(events), producer_id=producer_id, sequence=sequence)


def _retryable(policy: RetryPolicy, err: grpc.RpcError, attempt: int) -> ErrorDetails | None:
    """The error's details when it is worth another attempt, else None."""
    details = error_details(err)
    if details.code in policy.retry_codes and attempt < policy.max_attempts:
        return details
    return None


def publish(
    client: Client,
    events: Sequence[event_pb2.Event],
    *,
    producer_id: str = "",
    sequence: int = 0,
    policy: RetryPolicy = RetryPolicy(),
    timeout: float | None = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ingest_pb2.PublishResponse:
    """Publishes one batch, retrying per ``policy``.

    Returns the response, whose ``rejections`` list the events refused on
    their own (fix those, do not retry them). Raises the last
    ``grpc.RpcError`` when the batch as a whole is refused for a reason not
    retried (decode it with ``error_details``) or attempts run out.
    ``timeout`` bounds each attempt; ``sleep`` is the wait between them
    (replaceable, e.g. to observe the delays)."""
    request = _request(events, producer_id, sequence)
    attempt = 0
    while True:
        attempt += 1
        try:
            return client.ingest.Publish(request, timeout=timeout)
        except grpc.RpcError as err:
            details = _retryable(policy, err, attempt)
            if details is None:
                raise
            sleep(policy.delay(attempt, details))


async def apublish(
    client: AsyncClient,
    events: Sequence[event_pb2.Event],
    *,
    producer_id: str = "",
    sequence: int = 0,
    policy: RetryPolicy = RetryPolicy(),
    timeout: float | None = 10.0,
) -> ingest_pb2.PublishResponse:
    """The ``grpc.aio`` form of ``publish``."""
    request = _request(events, producer_id, sequence)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await client.ingest.Publish(request, timeout=timeout)
        except grpc.RpcError as err:
            details = _retryable(policy, err, attempt)
            if details is None:
                raise
            await asyncio.sleep(policy.delay(attempt, details))
