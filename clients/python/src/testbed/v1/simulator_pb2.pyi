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

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_STOPPING: _ClassVar[RunState]
    RUN_STATE_COMPLETED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_STOPPING: RunState
RUN_STATE_COMPLETED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState

class RateLoad(_message.Message):
    __slots__ = ("events_per_second", "duration")
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    events_per_second: float
    duration: _duration_pb2.Duration
    def __init__(self, events_per_second: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RampPhase(_message.Message):
    __slots__ = ("from_rate", "to_rate", "duration")
    FROM_RATE_FIELD_NUMBER: _ClassVar[int]
    TO_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    from_rate: float
    to_rate: float
    duration: _duration_pb2.Duration
    def __init__(self, from_rate: _Optional[float] = ..., to_rate: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HoldPhase(_message.Message):
    __slots__ = ("rate", "duration")
    RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    rate: float
    duration: _duration_pb2.Duration
    def __init__(self, rate: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class BurstPhase(_message.Message):
    __slots__ = ("multiplier", "duration")
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    multiplier: float
    duration: _duration_pb2.Duration
    def __init__(self, multiplier: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SpikePhase(_message.Message):
    __slots__ = ("rate", "duration")
    RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    rate: float
    duration: _duration_pb2.Duration
    def __init__(self, rate: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PausePhase(_message.Message):
    __slots__ = ("duration",)
    DURATION_FIELD_NUMBER: _ClassVar[int]
    duration: _duration_pb2.Duration
    def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Phase(_message.Message):
    __slots__ = ("ramp", "hold", "burst", "spike", "pause")
    RAMP_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    SPIKE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    ramp: RampPhase
    hold: HoldPhase
    burst: BurstPhase
    spike: SpikePhase
    pause: PausePhase
    def __init__(self, ramp: _Optional[_Union[RampPhase, _Mapping]] = ..., hold: _Optional[_Union[HoldPhase, _Mapping]] = ..., burst: _Optional[_Union[BurstPhase, _Mapping]] = ..., spike: _Optional[_Union[SpikePhase, _Mapping]] = ..., pause: _Optional[_Union[PausePhase, _Mapping]] = ...) -> None: ...

class Scenario(_message.Message):
    __slots__ = ("name", "phases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    def __init__(self, name: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ...) -> None: ...

class PayloadMix(_message.Message):
    __slots__ = ("gpu", "tokens", "metric")
    GPU_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    gpu: float
    tokens: float
    metric: float
    def __init__(self, gpu: _Optional[float] = ..., tokens: _Optional[float] = ..., metric: _Optional[float] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("run_id", "rate", "scenario", "devices", "mix", "seed", "target", "batch_size", "thresholds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    rate: RateLoad
    scenario: Scenario
    devices: int
    mix: PayloadMix
    seed: int
    target: str
    batch_size: int
    thresholds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., rate: _Optional[_Union[RateLoad, _Mapping]] = ..., scenario: _Optional[_Union[Scenario, _Mapping]] = ..., devices: _Optional[int] = ..., mix: _Optional[_Union[PayloadMix, _Mapping]] = ..., seed: _Optional[int] = ..., target: _Optional[str] = ..., batch_size: _Optional[int] = ..., thresholds: _Optional[_Iterable[str]] = ...) -> None: ...

class Threshold(_message.Message):
    __slots__ = ("expression", "observed", "observed_text", "passed", "aborted")
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TEXT_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    expression: str
    observed: float
    observed_text: str
    passed: bool
    aborted: bool
    def __init__(self, expression: _Optional[str] = ..., observed: _Optional[float] = ..., observed_text: _Optional[str] = ..., passed: _Optional[bool] = ..., aborted: _Optional[bool] = ...) -> None: ...

class SimLatency(_message.Message):
    __slots__ = ("p50", "p90", "p99", "p999", "max")
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    P999_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    p50: _duration_pb2.Duration
    p90: _duration_pb2.Duration
    p99: _duration_pb2.Duration
    p999: _duration_pb2.Duration
    max: _duration_pb2.Duration
    def __init__(self, p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p90: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p999: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunFigures(_message.Message):
    __slots__ = ("events_sent", "events_accepted", "events_rejected", "events_retried", "target_rate", "achieved_rate", "current_phase", "ack_latency", "status_codes")
    class StatusCodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EVENTS_SENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_RETRIED_FIELD_NUMBER: _ClassVar[int]
    TARGET_RATE_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_RATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PHASE_FIELD_NUMBER: _ClassVar[int]
    ACK_LATENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    events_sent: int
    events_accepted: int
    events_rejected: int
    events_retried: int
    target_rate: float
    achieved_rate: float
    current_phase: str
    ack_latency: SimLatency
    status_codes: _containers.ScalarMap[str, int]
    def __init__(self, events_sent: _Optional[int] = ..., events_accepted: _Optional[int] = ..., events_rejected: _Optional[int] = ..., events_retried: _Optional[int] = ..., target_rate: _Optional[float] = ..., achieved_rate: _Optional[float] = ..., current_phase: _Optional[str] = ..., ack_latency: _Optional[_Union[SimLatency, _Mapping]] = ..., status_codes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "spec", "state", "start_time", "end_time", "figures", "failure_reason", "thresholds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    spec: RunSpec
    state: RunState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    figures: RunFigures
    failure_reason: str
    thresholds: _containers.RepeatedCompositeFieldContainer[Threshold]
    def __init__(self, run_id: _Optional[str] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., figures: _Optional[_Union[RunFigures, _Mapping]] = ..., failure_reason: _Optional[str] = ..., thresholds: _Optional[_Iterable[_Union[Threshold, _Mapping]]] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class UpdateRunRequest(_message.Message):
    __slots__ = ("run_id", "events_per_second", "scenario")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    events_per_second: float
    scenario: Scenario
    def __init__(self, run_id: _Optional[str] = ..., events_per_second: _Optional[float] = ..., scenario: _Optional[_Union[Scenario, _Mapping]] = ...) -> None: ...

class UpdateRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "interval")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    interval: _duration_pb2.Duration
    def __init__(self, run_id: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...
