// k6 load script for the testbed's ingest API, shipped as an example for
// k6 users (k6/net/grpc). Every iteration publishes:
//   - a unary IngestService/Publish through server reflection,
//   - a unary IngestService/Publish with the message types loaded from the
//     .proto files in proto/ (no reflection needed, e.g. when it is off),
//   - a bidi IngestService/PublishStream of BATCHES batches (.proto files),
//     checking one acknowledgement per batch, in order.
// Each batch carries one valid event and one with an empty device_id, so
// every answer must show exactly one partial rejection (index 1).
// A failed check fails the `checks` threshold, and k6 exits non-zero (99).
//
// Run against a local `testbed all` (from the repository root):
//   k6 run -e TESTBED_ADDR=localhost:50051 bench/k6/publish.js
// Environment: TESTBED_ADDR (default localhost:50051), VUS (default 2),
// DURATION (default 10s), BATCHES per stream (default 3).
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import exec from 'k6/execution';

const ADDR = __ENV.TESTBED_ADDR || 'localhost:50051';
const BATCHES = parseInt(__ENV.BATCHES || '3', 10);

export const options = {
  vus: parseInt(__ENV.VUS || '2', 10),
  duration: __ENV.DURATION || '10s',
  thresholds: {
    // Every check of every iteration must pass.
    checks: ['rate==1.0'],
  },
};

// Message types from the .proto files (paths relative to this script).
const protoClient = new grpc.Client();
protoClient.load(['../../proto'], 'testbed/v1/ingest.proto');

// Message types from the server's reflection service.
const reflectClient = new grpc.Client();

function batch(tag) {
  const now = new Date().toISOString();
  const id = `k6-${exec.vu.idInTest}-${exec.vu.iterationInScenario}-${tag}`;
  return [
    {
      event_id: `${id}-ok`,
      device_id: `k6-dev-${exec.vu.idInTest}`,
      observed_at: now,
      labels: { tool: 'k6' },
      metric: { name: 'k6_iterations', value: 1, unit: '1' },
    },
    {
      event_id: `${id}-bad`,
      device_id: '',
      observed_at: now,
      metric: { name: 'k6_iterations', value: 1 },
    },
  ];
}

function checkPublish(res, how) {
  check(res, {
    [`${how}: Publish status OK`]: (r) => r && r.status === grpc.StatusOK,
    [`${how}: Publish accepted 1`]: (r) => r && r.message && r.message.acceptedCount === 1,
    [`${how}: Publish rejected index 1`]: (r) =>
      r && r.message && r.message.rejections.length === 1 && r.message.rejections[0].index === 1,
  });
}

export default function () {
  if (exec.vu.iterationInScenario === 0) {
    reflectClient.connect(ADDR, { plaintext: true, reflect: true });
    protoClient.connect(ADDR, { plaintext: true });
  }

  checkPublish(
    reflectClient.invoke('testbed.v1.IngestService/Publish', { events: batch('reflect') }),
    'reflection',
  );
  checkPublish(
    protoClient.invoke('testbed.v1.IngestService/Publish', { events: batch('proto') }),
    'proto',
  );

  const stream = new grpc.Stream(protoClient, 'testbed.v1.IngestService/PublishStream');
  const acks = [];
  stream.on('data', (ack) => acks.push(ack));
  stream.on('error', (err) => {
    check(err, { 'stream: no error': () => false });
  });
  stream.on('end', () => {
    check(acks, {
      'stream: one ack per batch': (a) => a.length === BATCHES,
      'stream: acks in order': (a) => a.every((ack, i) => String(ack.sequence) === String(i + 1)),
      'stream: each batch accepted 1, rejected index 1': (a) =>
        a.every((ack) => ack.acceptedCount === 1 && ack.rejections.length === 1
          && ack.rejections[0].index === 1),
    });
  });
  for (let i = 1; i <= BATCHES; i++) {
    stream.write({ sequence: i, events: batch(`stream-${i}`) });
  }
  stream.end();
}
