// k6 side of `bench/run --steps k6` (bench/src/k6_compare.rs): unary
// IngestService/Publish calls of BATCH events each, closed loop (every VU
// waits for its answer before the next call), so the harness can set k6
// against `testbed sim --unary` on the same acking stub and compare the
// events/s each reaches and the CPU each spends per 1 000 requests.
//
// publish.js is the functional example (reflection and .proto clients, a
// bidi stream, a deliberately invalid event per batch); its mix of calls
// cannot be compared call for call with the simulator's, hence this script.
// Events look like the simulator's: the same fields (event id, device,
// observed_at, the node/arch/zone labels, run id) and the same payload mix
// (gpu 50%, tokens 30%, metric 20%), so a batch is about the same size on
// the wire. Each call must be answered OK with every event accepted.
//
//   k6 run -e TESTBED_ADDR=127.0.0.1:50051 -e VUS=32 -e DURATION=20s -e BATCH=50 bench/k6/unary.js
// Environment: TESTBED_ADDR (default localhost:50051), VUS (default 32),
// DURATION (default 20s), BATCH events per call (default 50), DEVICES
// (default 1000), RUN_ID (default k6).
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import exec from 'k6/execution';

const ADDR = __ENV.TESTBED_ADDR || 'localhost:50051';
const BATCH = parseInt(__ENV.BATCH || '50', 10);
const DEVICES = parseInt(__ENV.DEVICES || '1000', 10);
const RUN_ID = __ENV.RUN_ID || 'k6';
const ARCHES = ['amd64', 'arm64', 'armv7'];
const MODELS = ['llama-3-8b', 'mistral-7b', 'qwen-2-7b'];
const TENANTS = ['team-a', 'team-b', 'team-c', 'team-d'];

export const options = {
  vus: parseInt(__ENV.VUS || '32', 10),
  duration: __ENV.DURATION || '20s',
  thresholds: {
    // Every call must be answered OK with the whole batch accepted.
    checks: ['rate==1.0'],
  },
};

const client = new grpc.Client();
client.load(['../../proto'], 'testbed/v1/ingest.proto');

// The per-event work of a k6 user script: a fresh id, time and payload.
let next = 0;
function event(now) {
  next += 1;
  const n = (exec.vu.idInTest * 7919 + next) % DEVICES;
  const e = {
    event_id: `${RUN_ID}-${exec.vu.idInTest}-${next}`,
    device_id: `k6-${String(n).padStart(5, '0')}`,
    observed_at: now,
    labels: { node: `node-${n % 50}`, arch: ARCHES[n % 3], zone: `zone-${n % 4}` },
    run_id: RUN_ID,
  };
  const pick = Math.random();
  if (pick < 0.5) {
    const util = Math.random();
    e.gpu = {
      gpu_index: n % 4,
      utilization: util,
      memory_used_bytes: Math.floor(util * 72e9),
      memory_total_bytes: 80e9,
      temperature_celsius: 40 + util * 30,
      power_watts: 150 + util * 150,
    };
  } else if (pick < 0.8) {
    const completion = Math.floor(80 / Math.pow(Math.random() * 0.999 + 0.001, 1 / 1.5));
    e.tokens = {
      model: MODELS[next % MODELS.length],
      tenant: TENANTS[next % TENANTS.length],
      prompt_tokens: Math.floor(200 / Math.pow(Math.random() * 0.999 + 0.001, 1 / 1.5)),
      completion_tokens: completion,
      latency: `${(0.05 + completion * 0.015).toFixed(3)}s`,
    };
  } else {
    e.metric = { name: 'fan_speed', value: Math.random() * 100, unit: '1' };
  }
  return e;
}

export default function () {
  if (exec.vu.iterationInScenario === 0) {
    client.connect(ADDR, { plaintext: true });
  }
  const now = new Date().toISOString();
  const events = [];
  for (let i = 0; i < BATCH; i++) {
    events.push(event(now));
  }
  const res = client.invoke('testbed.v1.IngestService/Publish', { events });
  check(res, {
    'Publish status OK': (r) => r && r.status === grpc.StatusOK,
    'Publish accepted the batch': (r) => r && r.message && r.message.acceptedCount === BATCH,
  });
}
