"""Builders of ``testbed.v1.Event`` messages, one per payload kind."""

from __future__ import annotations

import datetime
from typing import Mapping

from testbed.v1 import event_pb2


def _event(event_id: str, device_id: str, labels: Mapping[str, str] | None,
           observed_at: datetime.datetime | None, run_id: str) -> event_pb2.Event:
    event = event_pb2.Event(event_id=event_id, device_id=device_id, labels=dict(labels or {}), run_id=run_id)
    event.observed_at.FromDatetime(observed_at or datetime.datetime.now(datetime.timezone.utc))
    return event


def metric_event(event_id: str, device_id: str, name: str, value: float, unit: str = "", *,
                 labels: Mapping[str, str] | None = None,
                 observed_at: datetime.datetime | None = None, run_id: str = "") -> event_pb2.Event:
    """A generic metric event (``observed_at`` defaults to now, UTC)."""
    event = _event(event_id, device_id, labels, observed_at, run_id)
    event.metric.CopyFrom(event_pb2.Metric(name=name, value=value, unit=unit))
    return event


def gpu_event(event_id: str, device_id: str, utilization: float, *, gpu_index: int = 0,
              memory_used_bytes: int = 0, memory_total_bytes: int = 0,
              temperature_celsius: float = 0.0, power_watts: float = 0.0,
              labels: Mapping[str, str] | None = None,
              observed_at: datetime.datetime | None = None, run_id: str = "") -> event_pb2.Event:
    """A GPU sample event; ``utilization`` is a ratio within 0..1."""
    event = _event(event_id, device_id, labels, observed_at, run_id)
    event.gpu.CopyFrom(event_pb2.GpuSample(
        gpu_index=gpu_index, utilization=utilization, memory_used_bytes=memory_used_bytes,
        memory_total_bytes=memory_total_bytes, temperature_celsius=temperature_celsius,
        power_watts=power_watts))
    return event


def token_event(event_id: str, device_id: str, model: str, tenant: str, *,
                prompt_tokens: int = 0, completion_tokens: int = 0,
                latency: datetime.timedelta | None = None,
                labels: Mapping[str, str] | None = None,
                observed_at: datetime.datetime | None = None, run_id: str = "") -> event_pb2.Event:
    """The token usage of one inference request."""
    event = _event(event_id, device_id, labels, observed_at, run_id)
    usage = event_pb2.TokenUsage(model=model, tenant=tenant, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens)
    if latency is not None:
        usage.latency.FromTimedelta(latency)
    event.tokens.CopyFrom(usage)
    return event
