// The flood with k6 (bench/flood.py runs it: `k6 run bench/flood_k6.js` with
// the environment below). Open loop: calls start at RATE per second for
// DURATION whatever the answers (constant-arrival-rate); each virtual user
// holds its own connection (k6/net/grpc), and every call carries a fresh
// 12-word document drawn from the corpus vocabulary (VOCAB, a JSON list), so
// the prediction cache cannot answer it. The proto is loaded from protos/
// (no reflection calls in the measured window). Writes the outcome counts and
// latencies per status code as JSON to OUT. The virtual users connect
// during the first WARM (default 5s), before the flood starts.
//
//   TARGET=127.0.0.1:50051 RATE=500 DURATION=3s VUS=256 DEADLINE_MS=300 VOCAB=vocab.json OUT=k6.json
import grpc from 'k6/net/grpc';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

// One copy for all virtual users (parsed once, not once per user).
const vocabulary = new SharedArray('vocabulary', () => JSON.parse(open(__ENV.VOCAB)));
const client = new grpc.Client();
client.load(['../protos'], 'labeler/v1/labeler.proto');

const CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS',
  'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE',
  'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
];
const calls = {};
const latency = {};
for (const name of CODES) {
  calls[name] = new Counter(`calls_${name}`);
  latency[name] = new Trend(`ms_${name}`, true);
}
const pushbacks = new Counter('pushbacks');
const vus = parseInt(__ENV.VUS || '256', 10);
const WARM = __ENV.WARM || '5s';

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['p(50)', 'p(99)', 'count'],
  scenarios: {
    // Every virtual user opens its connection first (one cheap ListLabels),
    // so the flood's window measures calls, not connection set-up.
    connect: {
      executor: 'per-vu-iterations',
      vus: vus,
      iterations: 1,
      maxDuration: WARM,
      exec: 'connect',
    },
    flood: {
      executor: 'constant-arrival-rate',
      startTime: WARM,
      exec: 'flood',
      rate: parseInt(__ENV.RATE, 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '3s',
      preAllocatedVUs: vus,
      maxVUs: vus,
      gracefulStop: '2s',
    },
  },
};

let connected = false;

function ensureConnected() {
  if (!connected) {
    client.connect(__ENV.TARGET, { plaintext: true, timeout: '10s' });
    connected = true;
  }
}

export function connect() {
  ensureConnected();
  client.invoke('labeler.v1.Labeler/ListLabels', {}, { timeout: '10s' });
}

export function flood() {
  ensureConnected();
  const words = [];
  for (let i = 0; i < 12; i++) {
    words.push(vocabulary[Math.floor(Math.random() * vocabulary.length)]);
  }
  const started = Date.now();
  const reply = client.invoke('labeler.v1.Labeler/Classify', { words: words, threshold: 0 }, {
    timeout: `${__ENV.DEADLINE_MS || 300}ms`,
  });
  // k6 hands the status over as a Go value: its JSON form is the number.
  const name = CODES[JSON.parse(JSON.stringify(reply.status))] || 'UNKNOWN';
  calls[name].add(1);
  latency[name].add(Date.now() - started);
  if (reply.trailers && reply.trailers['grpc-retry-pushback-ms']) {
    pushbacks.add(1);
  }
}

export function handleSummary(data) {
  const out = { codes: {}, p50_ms: {}, p99_ms: {}, pushbacks: 0, dropped: 0 };
  for (const [key, metric] of Object.entries(data.metrics)) {
    if (key.startsWith('calls_') && metric.values.count > 0) {
      out.codes[key.slice(6)] = metric.values.count;
    } else if (key.startsWith('ms_') && metric.values.count > 0) {
      out.p50_ms[key.slice(3)] = metric.values['p(50)'];
      out.p99_ms[key.slice(3)] = metric.values['p(99)'];
    } else if (key === 'pushbacks') {
      out.pushbacks = metric.values.count;
    } else if (key === 'dropped_iterations') {
      out.dropped = metric.values.count;
    }
  }
  return { [__ENV.OUT]: JSON.stringify(out) };
}
