import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from testbed.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_RUNNING: _ClassVar[WorkerState]
    WORKER_STATE_PAUSED: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]

class DelayDistribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELAY_DISTRIBUTION_UNSPECIFIED: _ClassVar[DelayDistribution]
    DELAY_DISTRIBUTION_FIXED: _ClassVar[DelayDistribution]
    DELAY_DISTRIBUTION_UNIFORM: _ClassVar[DelayDistribution]
    DELAY_DISTRIBUTION_EXPONENTIAL: _ClassVar[DelayDistribution]
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_RUNNING: WorkerState
WORKER_STATE_PAUSED: WorkerState
WORKER_STATE_DRAINING: WorkerState
DELAY_DISTRIBUTION_UNSPECIFIED: DelayDistribution
DELAY_DISTRIBUTION_FIXED: DelayDistribution
DELAY_DISTRIBUTION_UNIFORM: DelayDistribution
DELAY_DISTRIBUTION_EXPONENTIAL: DelayDistribution

class WorkerInfo(_message.Message):
    __slots__ = ("consumer_name", "host", "node", "arch", "version", "state", "concurrency", "events_processed", "events_per_second", "last_heartbeat_time")
    CONSUMER_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    consumer_name: str
    host: str
    node: str
    arch: str
    version: str
    state: WorkerState
    concurrency: int
    events_processed: int
    events_per_second: float
    last_heartbeat_time: _timestamp_pb2.Timestamp
    def __init__(self, consumer_name: _Optional[str] = ..., host: _Optional[str] = ..., node: _Optional[str] = ..., arch: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., concurrency: _Optional[int] = ..., events_processed: _Optional[int] = ..., events_per_second: _Optional[float] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionStatus(_message.Message):
    __slots__ = ("partition", "backlog", "pending", "oldest_pending_age")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_AGE_FIELD_NUMBER: _ClassVar[int]
    partition: int
    backlog: int
    pending: int
    oldest_pending_age: _duration_pb2.Duration
    def __init__(self, partition: _Optional[int] = ..., backlog: _Optional[int] = ..., pending: _Optional[int] = ..., oldest_pending_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("partitions", "backlog", "pending", "oldest_pending_age", "dead_lettered")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_AGE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionStatus]
    backlog: int
    pending: int
    oldest_pending_age: _duration_pb2.Duration
    dead_lettered: int
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionStatus, _Mapping]]] = ..., backlog: _Optional[int] = ..., pending: _Optional[int] = ..., oldest_pending_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dead_lettered: _Optional[int] = ...) -> None: ...

class ControlState(_message.Message):
    __slots__ = ("paused", "concurrency", "faults", "pause_reason")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    concurrency: int
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    pause_reason: str
    def __init__(self, paused: _Optional[bool] = ..., concurrency: _Optional[int] = ..., faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ..., pause_reason: _Optional[str] = ...) -> None: ...

class DelayFault(_message.Message):
    __slots__ = ("distribution", "delay", "min")
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    distribution: DelayDistribution
    delay: _duration_pb2.Duration
    min: _duration_pb2.Duration
    def __init__(self, distribution: _Optional[_Union[DelayDistribution, str]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FailureFault(_message.Message):
    __slots__ = ("ratio",)
    RATIO_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    def __init__(self, ratio: _Optional[float] = ...) -> None: ...

class FaultScope(_message.Message):
    __slots__ = ("device_prefix", "payload_kind")
    DEVICE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_KIND_FIELD_NUMBER: _ClassVar[int]
    device_prefix: str
    payload_kind: _event_pb2.PayloadKind
    def __init__(self, device_prefix: _Optional[str] = ..., payload_kind: _Optional[_Union[_event_pb2.PayloadKind, str]] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("id", "scope", "delay", "failure", "expire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    scope: FaultScope
    delay: DelayFault
    failure: FailureFault
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., scope: _Optional[_Union[FaultScope, _Mapping]] = ..., delay: _Optional[_Union[DelayFault, _Mapping]] = ..., failure: _Optional[_Union[FailureFault, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("workers", "group", "desired")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    group: GroupStatus
    desired: ControlState
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., group: _Optional[_Union[GroupStatus, _Mapping]] = ..., desired: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchStatusResponse(_message.Message):
    __slots__ = ("workers", "group", "desired", "time")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    group: GroupStatus
    desired: ControlState
    time: _timestamp_pb2.Timestamp
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., group: _Optional[_Union[GroupStatus, _Mapping]] = ..., desired: _Optional[_Union[ControlState, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class PauseResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ControlState
    def __init__(self, state: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ControlState
    def __init__(self, state: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...

class SetConcurrencyRequest(_message.Message):
    __slots__ = ("concurrency",)
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    concurrency: int
    def __init__(self, concurrency: _Optional[int] = ...) -> None: ...

class SetConcurrencyResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ControlState
    def __init__(self, state: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...

class InjectFaultRequest(_message.Message):
    __slots__ = ("fault", "ttl")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    ttl: _duration_pb2.Duration
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class InjectFaultResponse(_message.Message):
    __slots__ = ("fault",)
    FAULT_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class ClearFaultsRequest(_message.Message):
    __slots__ = ("fault_ids",)
    FAULT_IDS_FIELD_NUMBER: _ClassVar[int]
    fault_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fault_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClearFaultsResponse(_message.Message):
    __slots__ = ("cleared_count", "state")
    CLEARED_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    cleared_count: int
    state: ControlState
    def __init__(self, cleared_count: _Optional[int] = ..., state: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...
