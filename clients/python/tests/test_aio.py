"""The grpc.aio client against a live `testbed all`: publish, a partial
rejection, device stats, pipeline watch and a bearer token."""

import asyncio
import datetime

import grpc
import pytest

import testbed_client as tc
from pyclient_harness import WRITE_TOKEN


async def wait_device_events(client, device_id: str, count: int, timeout: float = 15.0):
    """Polls GetDeviceStats until `count` events of the device are applied."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            stats = await tc.adevice_stats(client, device_id)
            if stats.totals.event_count >= count:
                return stats
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if loop.time() > deadline:
            raise AssertionError(f"{device_id}: {count} events not processed within {timeout} s")
        await asyncio.sleep(0.05)


def test_aio_publish_query_watch(testbed):
    """With grpc.aio: two events published (one rejected), the accepted one
    counted by GetDeviceStats, and two WatchPipelineStats messages."""

    async def run():
        async with tc.aconnect(testbed.addr) as client:
            reply = await tc.apublish(client, [
                tc.metric_event("py-aio-1", "py-dev-aio", "temp", 41.5, "Cel"),
                tc.metric_event("py-aio-2", "", "temp", 40.0, "Cel"),
            ])
            assert reply.accepted_count == 1
            assert [(r.index, r.field) for r in reply.rejections] == [(1, "events[1].device_id")]
            stats = await wait_device_events(client, "py-dev-aio", 1)
            assert stats.totals.event_count == 1
            seen = []
            async for pipeline in tc.awatch_pipeline_stats(client, interval=datetime.timedelta(milliseconds=100)):
                seen.append(pipeline)
                if len(seen) == 2:
                    break
            assert seen[1].time.ToDatetime() > seen[0].time.ToDatetime()
            assert seen[1].ingested >= 1

    asyncio.run(run())


def test_aio_error_details_and_token(testbed_auth):
    """With grpc.aio, a missing token decodes to UNAUTHENTICATED with
    ErrorInfo TOKEN_MISSING, and the interceptor's token is accepted."""

    async def run():
        event = tc.metric_event("py-aio-auth", "py-dev-aio-auth", "x", 1.0)
        async with tc.aconnect(testbed_auth.addr) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await tc.apublish(anonymous, [event])
            details = tc.error_details(raised.value)
            assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        async with tc.aconnect(testbed_auth.addr, token=WRITE_TOKEN) as writer:
            assert (await tc.apublish(writer, [event])).accepted_count == 1

    asyncio.run(run())
