/**
 * Node client for the Testbed's gRPC services (`testbed.v1`).
 *
 * The generated code (`src/gen`, ts-proto on @grpc/grpc-js, produced by
 * `clients/generate` from `proto/`) holds the messages and service
 * clients; this package adds a small typed layer. It owns connecting,
 * tokens, retries and error decoding, not the contracts.
 *
 * Layout:
 * - `connect`: {@link connect} a URL into the ingest, query and worker
 *   clients on one channel (plaintext, TLS, `dns:///`, bearer token).
 * - `events`: builders of `Event` messages.
 * - `errors`: {@link errorDetails} / {@link statusDetails}, the
 *   `google.rpc` details of an error (BadRequest, RetryInfo, ErrorInfo).
 * - `retry`: {@link publish} one batch, retried on UNAVAILABLE and
 *   RESOURCE_EXHAUSTED honouring RetryInfo.
 * - `stream`: {@link StreamPublisher}, batches on a bidi PublishStream
 *   with one promise per acknowledgement.
 * - `query`: {@link deviceStats} and {@link watchPipelineStats}.
 * - `unary`: a promise over a generated unary method.
 */
export { connect, parseTarget, type ConnectOptions, type TestbedClient } from "./connect";
export { errorDetails, statusDetails, type ErrorDetails, type FieldViolation } from "./errors";
export { gpuEvent, metricEvent, tokenEvent, type EventBase } from "./events";
export { deviceStats, watchPipelineStats } from "./query";
export { DEFAULT_RETRY, publish, retryDelayMs, type PublishOptions, type RetryPolicy } from "./retry";
export { StreamPublisher, ackError } from "./stream";
export { call, type UnaryMethod } from "./unary";
export * as ingest from "./gen/testbed/v1/ingest";
export * as query from "./gen/testbed/v1/query";
export * as worker from "./gen/testbed/v1/worker";
export * as event from "./gen/testbed/v1/event";
