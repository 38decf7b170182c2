//! Hostile and malformed input (#23) on real processes: one table of bad
//! requests across IngestService, QueryService, WorkerControlService and
//! SimulatorService, each answered with the right code and the field at
//! fault, without taking the server out of SERVING.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::Testbed;
use futures::future::BoxFuture;
use testbed_proto::prost::Message as _;
use testbed_proto::prost::bytes::{Buf as _, BufMut as _};
use testbed_proto::v1::fault::Effect;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::run_spec::Load;
use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{
    DelayFault, Event, FailureFault, Fault, FaultScope, GetDeviceStatsRequest, GetRunRequest,
    GetRunStatsRequest, GetTokenUsageRequest, GpuSample, InjectFaultRequest, ListDevicesRequest,
    Metric, PauseRequest, PublishRequest, RateLoad, RunSpec, SetConcurrencyRequest,
    StartRunRequest, TokenUsage, TopDevicesRequest, UpdateRunRequest, WatchRunRequest,
    WatchStatusRequest, event::Payload, update_run_request::Change,
};
use testbed_test_support::events::gpu_event;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt as _;

/// What a case observed: the code, the first violated field (a BadRequest
/// field violation, or the path of an ingest rejection) and any other
/// broken expectation (such as the valid events of a batch not counted).
struct Outcome {
    code: Code,
    field: Option<String>,
    problem: Option<String>,
}

/// Which server a case is sent to.
#[derive(Clone, Copy)]
enum Server {
    /// `testbed all`: ingest, query and worker control.
    All,
    /// `testbed sim --serve`.
    Sim,
}

type Call = Box<dyn FnOnce(Channel) -> BoxFuture<'static, Outcome> + Send>;

/// One row of the table.
struct Case {
    name: &'static str,
    server: Server,
    call: Call,
    /// Accepted codes (several only where the transport may answer either).
    codes: &'static [Code],
    /// The field that must be named, or `None` when no field is at fault.
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    server: Server,
    codes: &'static [Code],
    field: Option<&'static str>,
    call: impl FnOnce(Channel) -> BoxFuture<'static, Outcome> + Send + 'static,
) -> Case {
    Case {
        name,
        server,
        call: Box::new(call),
        codes,
        field,
    }
}

const INVALID: &[Code] = &[Code::InvalidArgument];
const OK: &[Code] = &[Code::Ok];

/// The outcome of a plain call: its code and first field violation.
fn outcome<T>(result: Result<T, Status>) -> Outcome {
    match result {
        Ok(_) => Outcome {
            code: Code::Ok,
            field: None,
            problem: None,
        },
        Err(status) => Outcome {
            code: status.code(),
            field: status
                .get_details_bad_request()
                .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone())),
            problem: None,
        },
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A valid GPU event observed now, with a fresh id.
fn good_event() -> Event {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let id = format!("bad-input-{}-{n}", std::process::id());
    gpu_event(&id, "bad-input-dev", SystemTime::now())
}

/// A good event with `spoil` applied.
fn bad_event(spoil: impl FnOnce(&mut Event)) -> Event {
    let mut event = good_event();
    spoil(&mut event);
    event
}

/// Publishes `[good, bad]`: the call must be OK with the good event counted
/// and the bad one alone rejected; the outcome's field is the rejection's.
fn mixed(bad: Event) -> impl FnOnce(Channel) -> BoxFuture<'static, Outcome> + Send + 'static {
    move |channel| {
        Box::pin(async move {
            let request = PublishRequest {
                events: vec![good_event(), bad],
                producer_id: String::new(),
                sequence: 0,
            };
            let response = match IngestServiceClient::new(channel).publish(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => return outcome::<()>(Err(status)),
            };
            let indices: Vec<u32> = response.rejections.iter().map(|r| r.index).collect();
            let problem = (response.accepted_count != 1 || indices != [1]).then(|| {
                format!(
                    "accepted {} (want 1), rejected indices {indices:?} (want [1])",
                    response.accepted_count
                )
            });
            Outcome {
                code: Code::Ok,
                field: response.rejections.first().map(|r| r.field.clone()),
                problem,
            }
        })
    }
}

/// A codec that sends and receives bytes as they are: garbage on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` as the request message of unary method `path`.
fn raw(
    path: &'static str,
    body: Vec<u8>,
) -> impl FnOnce(Channel) -> BoxFuture<'static, Outcome> + Send + 'static {
    move |channel| {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            if let Err(err) = grpc.ready().await {
                return outcome::<()>(Err(Status::unavailable(err.to_string())));
            }
            let path = PathAndQuery::from_static(path);
            outcome(grpc.unary(Request::new(body), path, RawCodec).await)
        })
    }
}

/// Bytes that are not protobuf: wire type 7 does not exist.
const GARBAGE: [u8; 8] = [0xff; 8];

fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

const TEN_YEARS: i64 = 10 * 365 * 24 * 3600;

fn ingest_cases() -> Vec<Case> {
    let a = Server::All;
    let e = |name, field, spoil: fn(&mut Event)| {
        case(name, Server::All, OK, Some(field), mixed(bad_event(spoil)))
    };
    let mut cases = vec![
        e("ingest: empty event_id", "events[1].event_id", |e| {
            e.event_id.clear()
        }),
        e("ingest: 10 KB event_id", "events[1].event_id", |e| {
            e.event_id = "x".repeat(10 * 1024)
        }),
        e(
            "ingest: control characters in device_id",
            "events[1].device_id",
            |e| e.device_id = "dev\u{0}\u{7}\n".to_owned(),
        ),
        e("ingest: empty device_id", "events[1].device_id", |e| {
            e.device_id.clear()
        }),
        e(
            "ingest: NaN utilization",
            "events[1].gpu.utilization",
            |e| gpu(e).utilization = f64::NAN,
        ),
        e(
            "ingest: utilization > 1",
            "events[1].gpu.utilization",
            |e| gpu(e).utilization = 1.5,
        ),
        e(
            "ingest: negative utilization",
            "events[1].gpu.utilization",
            |e| gpu(e).utilization = -0.1,
        ),
        e("ingest: +Inf power", "events[1].gpu.power_watts", |e| {
            gpu(e).power_watts = f64::INFINITY
        }),
        e("ingest: negative power", "events[1].gpu.power_watts", |e| {
            gpu(e).power_watts = -1.0
        }),
        e("ingest: -Inf metric value", "events[1].metric.value", |e| {
            e.payload = Some(Payload::Metric(Metric {
                name: "m".to_owned(),
                value: f64::NEG_INFINITY,
                unit: String::new(),
            }))
        }),
        e(
            "ingest: negative token latency",
            "events[1].tokens.latency",
            |e| {
                e.payload = Some(Payload::Tokens(TokenUsage {
                    model: "m".to_owned(),
                    tenant: "t".to_owned(),
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    latency: Some(secs(-1)),
                }))
            },
        ),
        e(
            "ingest: missing observed_at",
            "events[1].observed_at",
            |e| e.observed_at = None,
        ),
        e(
            "ingest: observed_at before 1970",
            "events[1].observed_at",
            |e| {
                e.observed_at = Some(prost_types::Timestamp {
                    seconds: -86_400,
                    nanos: 0,
                })
            },
        ),
        e("ingest: no payload", "events[1].payload", |e| {
            e.payload = None
        }),
        e("ingest: 10 000 labels", "events[1].labels", |e| {
            e.labels = (0..10_000)
                .map(|i| (format!("k{i}"), "v".to_owned()))
                .collect()
        }),
        e(
            "ingest: 100 KB label value",
            "events[1].labels[\"big\"]",
            |e| {
                e.labels.insert("big".to_owned(), "v".repeat(100 * 1024));
            },
        ),
    ];
    cases.push(case(
        "ingest: observed_at ten years ahead",
        a,
        OK,
        Some("events[1].observed_at"),
        mixed(bad_event(|e| {
            e.observed_at.as_mut().unwrap().seconds += TEN_YEARS;
        })),
    ));
    cases.push(case(
        "ingest: empty batch",
        a,
        INVALID,
        Some("events"),
        |channel| {
            Box::pin(async move {
                outcome(
                    IngestServiceClient::new(channel)
                        .publish(PublishRequest::default())
                        .await,
                )
            })
        },
    ));
    cases.push(case(
        "ingest: producer_id with control characters",
        a,
        INVALID,
        Some("producer_id"),
        |channel| {
            Box::pin(async move {
                outcome(
                    IngestServiceClient::new(channel)
                        .publish(PublishRequest {
                            events: vec![good_event()],
                            producer_id: "p\u{1b}[31m".to_owned(),
                            sequence: 1,
                        })
                        .await,
                )
            })
        },
    ));
    cases.push(case(
        "ingest: 5 MB message (over the 4 MB decode limit)",
        a,
        // tonic's decoder answers OUT_OF_RANGE (gRPC's own servers say
        // RESOURCE_EXHAUSTED); either way the client's mistake, no field.
        &[Code::OutOfRange],
        None,
        |channel| {
            Box::pin(async move {
                let big = bad_event(|e| {
                    e.labels.insert("big".to_owned(), "v".repeat(5 << 20));
                });
                outcome(
                    IngestServiceClient::new(channel)
                        .publish(PublishRequest {
                            events: vec![big],
                            ..Default::default()
                        })
                        .await,
                )
            })
        },
    ));
    cases.push(case(
        "ingest: bytes that are not protobuf",
        a,
        INVALID,
        Some("request"),
        raw("/testbed.v1.IngestService/Publish", GARBAGE.to_vec()),
    ));
    cases
}

fn gpu(event: &mut Event) -> &mut GpuSample {
    match &mut event.payload {
        Some(Payload::Gpu(gpu)) => gpu,
        _ => unreachable!("good_event is a GPU sample"),
    }
}

fn query_cases() -> Vec<Case> {
    let a = Server::All;
    let device = |id: String, window: Option<prost_types::Duration>| {
        move |channel: Channel| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                outcome(
                    QueryServiceClient::new(channel)
                        .get_device_stats(GetDeviceStatsRequest {
                            device_id: id,
                            window,
                        })
                        .await,
                )
            })
        }
    };
    vec![
        case(
            "query: empty device_id",
            a,
            INVALID,
            Some("device_id"),
            device(String::new(), None),
        ),
        case(
            "query: 10 KB device_id",
            a,
            INVALID,
            Some("device_id"),
            device("d".repeat(10 * 1024), None),
        ),
        case(
            "query: control characters in device_id",
            a,
            INVALID,
            Some("device_id"),
            device("dev\r\n\u{0}".to_owned(), None),
        ),
        case(
            "query: unknown device",
            a,
            &[Code::NotFound],
            None,
            device("never-seen-device".to_owned(), None),
        ),
        case(
            "query: zero window",
            a,
            INVALID,
            Some("window"),
            device("dev-1".to_owned(), Some(secs(0))),
        ),
        case(
            "query: inverted (negative) window",
            a,
            INVALID,
            Some("window"),
            device("dev-1".to_owned(), Some(secs(-3600))),
        ),
        case(
            "query: ten-year window",
            a,
            INVALID,
            Some("window"),
            device("dev-1".to_owned(), Some(secs(TEN_YEARS))),
        ),
        case(
            "query: negative page_size",
            a,
            INVALID,
            Some("page_size"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .list_devices(ListDevicesRequest {
                                page_size: -1,
                                ..Default::default()
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: garbage page_token",
            a,
            INVALID,
            Some("page_token"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .list_devices(ListDevicesRequest {
                                page_token: "%%%not-a-token\u{0}".to_owned(),
                                ..Default::default()
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: malformed filter",
            a,
            INVALID,
            Some("filter"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .list_devices(ListDevicesRequest {
                                filter: "=,==,arch".to_owned(),
                                ..Default::default()
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: unknown TopMetric value",
            a,
            INVALID,
            Some("metric"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .top_devices(TopDevicesRequest {
                                metric: 99,
                                ..Default::default()
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: negative TopDevices limit",
            a,
            INVALID,
            Some("limit"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .top_devices(TopDevicesRequest {
                                metric: 1,
                                window: None,
                                limit: i32::MIN,
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: unknown TokenGroupBy value",
            a,
            INVALID,
            Some("group_by"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .get_token_usage(GetTokenUsageRequest {
                                group_by: -7,
                                window: None,
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: run_id with control characters",
            a,
            INVALID,
            Some("run_id"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        QueryServiceClient::new(channel)
                            .get_run_stats(GetRunStatsRequest {
                                run_id: "run\u{7f}".to_owned(),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "query: 5 MB device_id (over the 4 MB decode limit)",
            a,
            // tonic's decoder answers OUT_OF_RANGE (gRPC's own servers say
            // RESOURCE_EXHAUSTED); either way the client's mistake, no field.
            &[Code::OutOfRange],
            None,
            device("d".repeat(5 << 20), None),
        ),
        case(
            "query: expired deadline (grpc-timeout 1n)",
            a,
            // tonic's server answers an expired grpc-timeout CANCELLED (the
            // client's own deadline may fire first: DEADLINE_EXCEEDED), but
            // it polls the handler before its timer, so a handler that is
            // done at its first poll answers (NOT_FOUND) all the same.
            &[Code::Cancelled, Code::DeadlineExceeded, Code::NotFound],
            None,
            |channel| {
                Box::pin(async move {
                    let mut request = Request::new(GetDeviceStatsRequest {
                        device_id: "dev-1".to_owned(),
                        window: None,
                    });
                    request
                        .metadata_mut()
                        .insert("grpc-timeout", MetadataValue::from_static("1n"));
                    outcome(
                        QueryServiceClient::new(channel)
                            .get_device_stats(request)
                            .await,
                    )
                })
            },
        ),
        case(
            "query: 64 KB of metadata",
            a,
            // Over the header list size the server's HTTP/2 settings allow:
            // refused by the transport, before any service code runs.
            &[Code::ResourceExhausted],
            None,
            |channel| {
                Box::pin(async move {
                    let mut request = Request::new(GetRunStatsRequest {
                        run_id: "r".to_owned(),
                    });
                    let value = "v".repeat(64 * 1024);
                    request
                        .metadata_mut()
                        .insert("x-huge", value.parse().unwrap());
                    outcome(
                        QueryServiceClient::new(channel)
                            .get_run_stats(request)
                            .await,
                    )
                })
            },
        ),
        case(
            "query: bytes that are not protobuf",
            a,
            INVALID,
            Some("request"),
            raw("/testbed.v1.QueryService/GetDeviceStats", GARBAGE.to_vec()),
        ),
    ]
}

fn control_cases() -> Vec<Case> {
    let a = Server::All;
    let inject = |fault: Option<Fault>, ttl: Option<prost_types::Duration>| {
        move |channel: Channel| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                outcome(
                    WorkerControlServiceClient::new(channel)
                        .inject_fault(InjectFaultRequest { fault, ttl })
                        .await,
                )
            })
        }
    };
    let failure = |ratio| Fault {
        effect: Some(Effect::Failure(FailureFault { ratio })),
        ..Default::default()
    };
    let delay = |d: prost_types::Duration| Fault {
        effect: Some(Effect::Delay(DelayFault {
            distribution: 0,
            delay: Some(d),
            min: None,
        })),
        ..Default::default()
    };
    let concurrency = |concurrency: u32| {
        move |channel: Channel| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                outcome(
                    WorkerControlServiceClient::new(channel)
                        .set_concurrency(SetConcurrencyRequest { concurrency })
                        .await,
                )
            })
        }
    };
    vec![
        case(
            "control: failure ratio 1.5",
            a,
            INVALID,
            Some("fault.failure.ratio"),
            inject(Some(failure(1.5)), Some(secs(60))),
        ),
        case(
            "control: NaN failure ratio",
            a,
            INVALID,
            Some("fault.failure.ratio"),
            inject(Some(failure(f64::NAN)), Some(secs(60))),
        ),
        case(
            "control: negative delay",
            a,
            INVALID,
            Some("fault.delay.delay"),
            inject(Some(delay(secs(-5))), Some(secs(60))),
        ),
        case(
            "control: zero ttl (expiry)",
            a,
            INVALID,
            Some("ttl"),
            inject(Some(failure(0.5)), Some(secs(0))),
        ),
        case(
            "control: missing ttl",
            a,
            INVALID,
            Some("ttl"),
            inject(Some(failure(0.5)), None),
        ),
        case(
            "control: no effect",
            a,
            INVALID,
            Some("fault.effect"),
            inject(Some(Fault::default()), Some(secs(60))),
        ),
        case(
            "control: unknown payload kind in scope",
            a,
            INVALID,
            Some("fault.scope.payload_kind"),
            inject(
                Some(Fault {
                    scope: Some(FaultScope {
                        device_prefix: String::new(),
                        payload_kind: 42,
                    }),
                    ..failure(0.5)
                }),
                Some(secs(60)),
            ),
        ),
        case(
            "control: unknown delay distribution",
            a,
            INVALID,
            Some("fault.delay.distribution"),
            inject(
                Some(Fault {
                    effect: Some(Effect::Delay(DelayFault {
                        distribution: 1000,
                        delay: Some(secs(1)),
                        min: None,
                    })),
                    ..Default::default()
                }),
                Some(secs(60)),
            ),
        ),
        case(
            "control: concurrency 0",
            a,
            INVALID,
            Some("concurrency"),
            concurrency(0),
        ),
        case(
            "control: concurrency u32::MAX",
            a,
            INVALID,
            Some("concurrency"),
            concurrency(u32::MAX),
        ),
        case(
            "control: 10 KB pause reason",
            a,
            INVALID,
            Some("reason"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        WorkerControlServiceClient::new(channel)
                            .pause(PauseRequest {
                                reason: "r".repeat(10 * 1024),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "control: WatchStatus interval 0",
            a,
            INVALID,
            Some("interval"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        WorkerControlServiceClient::new(channel)
                            .watch_status(WatchStatusRequest {
                                interval: Some(prost_types::Duration {
                                    seconds: 0,
                                    nanos: 1,
                                }),
                            })
                            .await,
                    )
                })
            },
        ),
    ]
}

fn sim_cases() -> Vec<Case> {
    let s = Server::Sim;
    let start = |spec: Option<RunSpec>| {
        move |channel: Channel| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                outcome(
                    SimulatorServiceClient::new(channel)
                        .start_run(StartRunRequest { spec })
                        .await,
                )
            })
        }
    };
    let rate = |events_per_second: f64| RunSpec {
        load: Some(Load::Rate(RateLoad {
            events_per_second,
            duration: Some(secs(1)),
        })),
        ..Default::default()
    };
    vec![
        case(
            "sim: negative rate",
            s,
            INVALID,
            Some("spec.rate.events_per_second"),
            start(Some(rate(-10.0))),
        ),
        case(
            "sim: +Inf rate",
            s,
            INVALID,
            Some("spec.rate.events_per_second"),
            start(Some(rate(f64::INFINITY))),
        ),
        case("sim: no spec", s, INVALID, Some("spec"), start(None)),
        case(
            "sim: no load",
            s,
            INVALID,
            Some("spec.load"),
            start(Some(RunSpec::default())),
        ),
        case(
            "sim: u32::MAX devices",
            s,
            INVALID,
            Some("spec.devices"),
            start(Some(RunSpec {
                devices: u32::MAX,
                ..rate(1.0)
            })),
        ),
        case(
            "sim: bad target",
            s,
            INVALID,
            Some("spec.target"),
            start(Some(RunSpec {
                target: "not a url \u{0}".to_owned(),
                ..rate(1.0)
            })),
        ),
        case(
            "sim: run_id with control characters",
            s,
            INVALID,
            Some("spec.run_id"),
            start(Some(RunSpec {
                run_id: "run\n1".to_owned(),
                ..rate(1.0)
            })),
        ),
        case(
            "sim: negative rate duration",
            s,
            INVALID,
            Some("spec.rate.duration"),
            start(Some(RunSpec {
                load: Some(Load::Rate(RateLoad {
                    events_per_second: 1.0,
                    duration: Some(secs(-1)),
                })),
                ..Default::default()
            })),
        ),
        case(
            "sim: UpdateRun NaN rate",
            s,
            INVALID,
            Some("events_per_second"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        SimulatorServiceClient::new(channel)
                            .update_run(UpdateRunRequest {
                                run_id: "nope".to_owned(),
                                change: Some(Change::EventsPerSecond(f64::NAN)),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "sim: GetRun 10 KB run_id",
            s,
            INVALID,
            Some("run_id"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        SimulatorServiceClient::new(channel)
                            .get_run(GetRunRequest {
                                run_id: "r".repeat(10 * 1024),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "sim: GetRun unknown run",
            s,
            &[Code::NotFound],
            None,
            |channel| {
                Box::pin(async move {
                    outcome(
                        SimulatorServiceClient::new(channel)
                            .get_run(GetRunRequest {
                                run_id: "no-such-run".to_owned(),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "sim: WatchRun ten-year interval",
            s,
            INVALID,
            Some("interval"),
            |channel| {
                Box::pin(async move {
                    outcome(
                        SimulatorServiceClient::new(channel)
                            .watch_run(WatchRunRequest {
                                run_id: "nope".to_owned(),
                                interval: Some(secs(TEN_YEARS)),
                            })
                            .await,
                    )
                })
            },
        ),
        case(
            "sim: bytes that are not protobuf",
            s,
            INVALID,
            Some("request"),
            raw(
                "/testbed.v1.SimulatorService/StartRun",
                // A valid StartRunRequest with trailing garbage.
                {
                    let mut body = StartRunRequest {
                        spec: Some(rate(1.0)),
                    }
                    .encode_to_vec();
                    body.extend_from_slice(&GARBAGE);
                    body
                },
            ),
        ),
    ]
}

/// Whether `service` on `tb` answers SERVING to a fresh connection.
async fn serving(tb: &Testbed, service: &str) -> Result<(), String> {
    let status = common::health_check(tb.channel().await, service).await;
    match status {
        Ok(ServingStatus::Serving) => Ok(()),
        other => Err(format!("{service} not SERVING: {other:?}")),
    }
}

const ALL_SERVICES: [&str; 3] = [
    "testbed.v1.IngestService",
    "testbed.v1.QueryService",
    "testbed.v1.WorkerControlService",
];
const SIM_SERVICE: &str = "testbed.v1.SimulatorService";

/// Every kind of bad input gets its documented code and names the field at
/// fault; ingest still counts the valid events of a mixed batch; every
/// server stays SERVING throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_and_the_servers_stay_serving() {
    let all = Testbed::start(&["all"]);
    for service in ALL_SERVICES {
        all.wait_serving(service).await;
    }
    let url = format!("http://{}", all.addr);
    let sim = Testbed::start(&["sim", "--serve", "--target", &url]);
    sim.wait_serving(SIM_SERVICE).await;

    let cases: Vec<Case> = [ingest_cases(), query_cases(), control_cases(), sim_cases()]
        .into_iter()
        .flatten()
        .collect();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let total = cases.len();
    let mut mismatches = Vec::new();
    for case in cases {
        let (tb, services): (&Testbed, &[&str]) = match case.server {
            Server::All => (&all, &ALL_SERVICES),
            Server::Sim => (&sim, &[SIM_SERVICE]),
        };
        // A fresh connection per case: a transport-level refusal (such as
        // oversized metadata) may close it.
        let got = tokio::time::timeout(Duration::from_secs(20), (case.call)(tb.channel().await))
            .await
            .unwrap_or_else(|_| Outcome {
                code: Code::DeadlineExceeded,
                field: None,
                problem: Some("no answer within 20 s".to_owned()),
            });
        eprintln!("{:<55} {:?} field={:?}", case.name, got.code, got.field);
        let mut wrong = Vec::new();
        if !case.codes.contains(&got.code) {
            wrong.push(format!("code {:?}, want {:?}", got.code, case.codes));
        }
        if matches!(got.code, Code::Internal | Code::Unknown) {
            wrong.push(format!("{:?} for bad input", got.code));
        }
        if got.field.as_deref() != case.field {
            wrong.push(format!("field {:?}, want {:?}", got.field, case.field));
        }
        if let Some(problem) = got.problem {
            wrong.push(problem);
        }
        for service in services {
            if let Err(down) = serving(tb, service).await {
                wrong.push(down);
            }
        }
        if !wrong.is_empty() {
            mismatches.push(format!("{}: {}", case.name, wrong.join("; ")));
        }
    }
    for service in ALL_SERVICES {
        serving(&all, service).await.unwrap();
    }
    serving(&sim, SIM_SERVICE).await.unwrap();
    assert!(
        mismatches.is_empty(),
        "{} of {total} cases wrong:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
