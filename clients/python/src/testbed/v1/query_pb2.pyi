import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TopMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOP_METRIC_UNSPECIFIED: _ClassVar[TopMetric]
    TOP_METRIC_GPU_UTILIZATION: _ClassVar[TopMetric]
    TOP_METRIC_GPU_POWER: _ClassVar[TopMetric]
    TOP_METRIC_GPU_TEMPERATURE: _ClassVar[TopMetric]
    TOP_METRIC_TOKENS: _ClassVar[TopMetric]
    TOP_METRIC_EVENT_COUNT: _ClassVar[TopMetric]

class TokenGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_GROUP_BY_UNSPECIFIED: _ClassVar[TokenGroupBy]
    TOKEN_GROUP_BY_MODEL: _ClassVar[TokenGroupBy]
    TOKEN_GROUP_BY_TENANT: _ClassVar[TokenGroupBy]
TOP_METRIC_UNSPECIFIED: TopMetric
TOP_METRIC_GPU_UTILIZATION: TopMetric
TOP_METRIC_GPU_POWER: TopMetric
TOP_METRIC_GPU_TEMPERATURE: TopMetric
TOP_METRIC_TOKENS: TopMetric
TOP_METRIC_EVENT_COUNT: TopMetric
TOKEN_GROUP_BY_UNSPECIFIED: TokenGroupBy
TOKEN_GROUP_BY_MODEL: TokenGroupBy
TOKEN_GROUP_BY_TENANT: TokenGroupBy

class Summary(_message.Message):
    __slots__ = ("count", "sum", "min", "max", "mean")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    count: int
    sum: float
    min: float
    max: float
    mean: float
    def __init__(self, count: _Optional[int] = ..., sum: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., mean: _Optional[float] = ...) -> None: ...

class LatencyPercentiles(_message.Message):
    __slots__ = ("p50", "p90", "p99", "max")
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    p50: _duration_pb2.Duration
    p90: _duration_pb2.Duration
    p99: _duration_pb2.Duration
    max: _duration_pb2.Duration
    def __init__(self, p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p90: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "labels", "last_seen_time")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    labels: _containers.ScalarMap[str, str]
    last_seen_time: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GpuStats(_message.Message):
    __slots__ = ("count", "utilization", "memory_used_bytes", "temperature_celsius", "power_watts")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    count: int
    utilization: Summary
    memory_used_bytes: Summary
    temperature_celsius: Summary
    power_watts: Summary
    def __init__(self, count: _Optional[int] = ..., utilization: _Optional[_Union[Summary, _Mapping]] = ..., memory_used_bytes: _Optional[_Union[Summary, _Mapping]] = ..., temperature_celsius: _Optional[_Union[Summary, _Mapping]] = ..., power_watts: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class TokenStats(_message.Message):
    __slots__ = ("count", "prompt_tokens", "completion_tokens", "latency")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    count: int
    prompt_tokens: int
    completion_tokens: int
    latency: Summary
    def __init__(self, count: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., latency: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class MetricStats(_message.Message):
    __slots__ = ("name", "unit", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit: str
    value: Summary
    def __init__(self, name: _Optional[str] = ..., unit: _Optional[str] = ..., value: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class DeviceStats(_message.Message):
    __slots__ = ("event_count", "gpu", "tokens", "metrics")
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    event_count: int
    gpu: GpuStats
    tokens: TokenStats
    metrics: _containers.RepeatedCompositeFieldContainer[MetricStats]
    def __init__(self, event_count: _Optional[int] = ..., gpu: _Optional[_Union[GpuStats, _Mapping]] = ..., tokens: _Optional[_Union[TokenStats, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[MetricStats, _Mapping]]] = ...) -> None: ...

class MinuteBucket(_message.Message):
    __slots__ = ("start_time", "event_count", "gpu", "tokens", "metrics")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    event_count: int
    gpu: GpuStats
    tokens: TokenStats
    metrics: _containers.RepeatedCompositeFieldContainer[MetricStats]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_count: _Optional[int] = ..., gpu: _Optional[_Union[GpuStats, _Mapping]] = ..., tokens: _Optional[_Union[TokenStats, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[MetricStats, _Mapping]]] = ...) -> None: ...

class GetDeviceStatsRequest(_message.Message):
    __slots__ = ("device_id", "window")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    window: _duration_pb2.Duration
    def __init__(self, device_id: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetDeviceStatsResponse(_message.Message):
    __slots__ = ("device", "totals", "series")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    device: Device
    totals: DeviceStats
    series: _containers.RepeatedCompositeFieldContainer[MinuteBucket]
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., totals: _Optional[_Union[DeviceStats, _Mapping]] = ..., series: _Optional[_Iterable[_Union[MinuteBucket, _Mapping]]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    next_page_token: str
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TopDevicesRequest(_message.Message):
    __slots__ = ("metric", "window", "limit")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    metric: TopMetric
    window: _duration_pb2.Duration
    limit: int
    def __init__(self, metric: _Optional[_Union[TopMetric, str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class DeviceScore(_message.Message):
    __slots__ = ("device_id", "value", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    value: float
    labels: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., value: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TopDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceScore]
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceScore, _Mapping]]] = ...) -> None: ...

class GetTokenUsageRequest(_message.Message):
    __slots__ = ("group_by", "window")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    group_by: TokenGroupBy
    window: _duration_pb2.Duration
    def __init__(self, group_by: _Optional[_Union[TokenGroupBy, str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TokenUsageGroup(_message.Message):
    __slots__ = ("key", "requests", "prompt_tokens", "completion_tokens", "latency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    latency: LatencyPercentiles
    def __init__(self, key: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., latency: _Optional[_Union[LatencyPercentiles, _Mapping]] = ...) -> None: ...

class GetTokenUsageResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[TokenUsageGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[TokenUsageGroup, _Mapping]]] = ...) -> None: ...

class PipelineStats(_message.Message):
    __slots__ = ("ingested", "processed", "duplicates", "dead_lettered", "backlog", "pending", "processing_rate", "end_to_end_latency", "time")
    INGESTED_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_RATE_FIELD_NUMBER: _ClassVar[int]
    END_TO_END_LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ingested: int
    processed: int
    duplicates: int
    dead_lettered: int
    backlog: int
    pending: int
    processing_rate: float
    end_to_end_latency: LatencyPercentiles
    time: _timestamp_pb2.Timestamp
    def __init__(self, ingested: _Optional[int] = ..., processed: _Optional[int] = ..., duplicates: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., backlog: _Optional[int] = ..., pending: _Optional[int] = ..., processing_rate: _Optional[float] = ..., end_to_end_latency: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPipelineStatsRequest(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetPipelineStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: PipelineStats
    def __init__(self, stats: _Optional[_Union[PipelineStats, _Mapping]] = ...) -> None: ...

class WatchPipelineStatsRequest(_message.Message):
    __slots__ = ("interval", "window")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    window: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchPipelineStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: PipelineStats
    def __init__(self, stats: _Optional[_Union[PipelineStats, _Mapping]] = ...) -> None: ...

class GetRunStatsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunStatsResponse(_message.Message):
    __slots__ = ("run_id", "processed", "processed_gpu", "processed_tokens", "processed_metric", "duplicates", "dead_lettered", "end_to_end_latency", "first_event_time", "last_processed_time")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_GPU_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_METRIC_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    END_TO_END_LATENCY_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PROCESSED_TIME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    processed: int
    processed_gpu: int
    processed_tokens: int
    processed_metric: int
    duplicates: int
    dead_lettered: int
    end_to_end_latency: LatencyPercentiles
    first_event_time: _timestamp_pb2.Timestamp
    last_processed_time: _timestamp_pb2.Timestamp
    def __init__(self, run_id: _Optional[str] = ..., processed: _Optional[int] = ..., processed_gpu: _Optional[int] = ..., processed_tokens: _Optional[int] = ..., processed_metric: _Optional[int] = ..., duplicates: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., end_to_end_latency: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., first_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_processed_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
