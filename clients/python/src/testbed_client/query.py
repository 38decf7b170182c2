"""Reading statistics: a device's figures, and the pipeline's as a stream."""

from __future__ import annotations

import datetime
from typing import AsyncIterator, Iterator

from google.protobuf import duration_pb2

from testbed.v1 import query_pb2
from testbed_client.connect import AsyncClient, Client


def _duration(value: datetime.timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def _device_request(device_id: str, window: datetime.timedelta | None) -> query_pb2.GetDeviceStatsRequest:
    return query_pb2.GetDeviceStatsRequest(device_id=device_id, window=_duration(window))


def device_stats(client: Client, device_id: str, *, window: datetime.timedelta | None = None,
                 timeout: float | None = 10.0) -> query_pb2.GetDeviceStatsResponse:
    """A device's labels, totals and per-minute series over ``window``
    (server default 15 minutes). NOT_FOUND when no event of it is
    retained."""
    return client.query.GetDeviceStats(_device_request(device_id, window), timeout=timeout)


async def adevice_stats(client: AsyncClient, device_id: str, *, window: datetime.timedelta | None = None,
                        timeout: float | None = 10.0) -> query_pb2.GetDeviceStatsResponse:
    """The ``grpc.aio`` form of ``device_stats``."""
    return await client.query.GetDeviceStats(_device_request(device_id, window), timeout=timeout)


def _watch_request(interval: datetime.timedelta | None,
                   window: datetime.timedelta | None) -> query_pb2.WatchPipelineStatsRequest:
    return query_pb2.WatchPipelineStatsRequest(interval=_duration(interval), window=_duration(window))


def watch_pipeline_stats(client: Client, *, interval: datetime.timedelta | None = None,
                         window: datetime.timedelta | None = None) -> Iterator[query_pb2.PipelineStats]:
    """The pipeline's figures, one right away and then one per ``interval``
    (server default 1 s), for as long as the caller iterates; leaving the
    loop (or closing the iterator) cancels the call."""
    call = client.query.WatchPipelineStats(_watch_request(interval, window))
    try:
        for message in call:
            yield message.stats
    finally:
        call.cancel()


async def awatch_pipeline_stats(client: AsyncClient, *, interval: datetime.timedelta | None = None,
                                window: datetime.timedelta | None = None) -> AsyncIterator[query_pb2.PipelineStats]:
    """The ``grpc.aio`` form of ``watch_pipeline_stats``."""
    call = client.query.WatchPipelineStats(_watch_request(interval, window))
    try:
        async for message in call:
            yield message.stats
    finally:
        call.cancel()
