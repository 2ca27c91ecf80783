/**
 * bench:faults — the fault-and-abuse suite (test/faults) at volume. Prints one JSON line:
 *
 *   http_requests / http_crashes     fuzzed raw requests (hostile request lines, headers, bodies,
 *                                    media types, abrupt closes) at the real daemon; a crash is
 *                                    the process gone or /healthz unanswered
 *   ingest_kill_trials / _lost / _duplicated
 *                                    kill -9 at random points of HTTP ingest (test/harness/kill-trials.ts)
 *   promotion_kill_trials / half_written_versions / audit_ok / gc_bound_ok
 *                                    kill -9 at random points of promotion to a file-drop target
 *   poison_messages / stuck_partitions
 *                                    refused Kafka messages (at the source's size limit, over a small
 *                                    dead-letter topic's, and to a topic that can never take them)
 *                                    between valid ones, on a real broker
 *   healthz_p99_ms_16mb_batch / healthz_p99_ms_idle
 *                                    /healthz latency while a 16 MB NDJSON batch is stored, and idle
 *                                    (the baseline, same run)
 *
 *   npm run bench:faults
 *   env: BENCH_FUZZ (10000), BENCH_INGEST_KILLS (100), BENCH_PROMOTION_KILLS (100), BENCH_POISON (30)
 */
import { connect } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Kafka, logLevel } from 'kafkajs';
import { mulberry32 } from '../daemon/base/random.js';
import { silentLogger } from '../daemon/base/log.js';
import { defaultLimits } from '../daemon/feedback/schema.js';
import { createIngest } from '../daemon/ingest/pipeline.js';
import { openBuffer } from '../daemon/store/buffer.js';
import { createKafkaSource } from '../adapters/sources/kafka.js';
import { spawnDaemon, type DaemonProcess } from '../test/harness/daemon.js';
import { makeEvent } from '../test/harness/events.js';
import { ingestKillTrials, promotionKillTrials } from '../test/harness/kill-trials.js';
import { createTopics, startBroker } from '../test/harness/kafka.js';
import { committedEqualsEnd } from '../test/kafka/util.js';

const env = (k: string, d: number): number => Number(process.env[k] ?? d);
const rng = mulberry32(13);
const rand = rng.next;
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
const note = (msg: string): void => { process.stderr.write(`bench:faults: ${msg}\n`); };

/** One hostile request: random request line, headers and body, sometimes cut off mid-way. */
function hostileRequest(i: number): Buffer {
  const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'G\u0000T', 'POST ', 'X'.repeat(200)];
  const targets = ['/', '/healthz', '/v1/status', '/metrics', '/v1/feedback', 'http://[', 'http://x:99999/', '/%', '/%E0%A4%A',
    '/v1/models/%2e%2e/versions', '/v1/models/tiny/versions/v1/approve', '*', '//', `/${'a'.repeat(9000)}`, '/v1/feedback?x=' + 'y'.repeat(100)];
  const types = ['application/json', 'application/x-ndjson', 'text/plain; x=ndjson', 'application/x-www-form-urlencoded', '', 'application/json; charset=utf-16', '\u00ff\u00fe'];
  const bodies = [
    () => Buffer.from(JSON.stringify(makeEvent(i))),
    () => Buffer.from('{}\n'.repeat(1 + Math.floor(rand() * 2000))),
    () => bytes(Math.floor(rand() * 4096)),
    () => Buffer.from('['.repeat(20_000)),
    () => Buffer.from(JSON.stringify({ ...makeEvent(i), ts: '9999-12-31T23:59:59Z' })),
    () => Buffer.concat([Buffer.from('{"event_id":"x","chosen":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]),
    () => Buffer.alloc(0),
  ];
  const body = pick(bodies)();
  const headers: string[] = [`Host: ${pick(['x', '', 'a'.repeat(300)])}`];
  const t = pick(types);
  if (t !== '') headers.push(`Content-Type: ${t}`);
  const cl = rand();
  if (cl < 0.6) headers.push(`Content-Length: ${body.length}`);
  else if (cl < 0.7) headers.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 3}`);
  else if (cl < 0.8) headers.push('Transfer-Encoding: chunked');
  else if (cl < 0.85) headers.push(`Content-Length: ${-1 - Math.floor(rand() * 10)}`);
  if (rand() < 0.1) headers.push(`Authorization: ${pick(['Bearer x', 'bearer', 'Basic \u0000', 'Bearer ' + 'z'.repeat(5000)])}`);
  if (rand() < 0.05) headers.push(`X-Big: ${'h'.repeat(20_000 + Math.floor(rand() * 90_000))}`);
  if (rand() < 0.05) headers.push('Bad Header Without Colon');
  const chunked = headers.includes('Transfer-Encoding: chunked')
    ? Buffer.concat([Buffer.from(`${rand() < 0.5 ? body.length.toString(16) : 'zz'}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : body;
  const req = Buffer.concat([Buffer.from(`${pick(methods)} ${pick(targets)} HTTP/1.${rand() < 0.9 ? 1 : 0}\r\n${headers.join('\r\n')}\r\n\r\n`, 'latin1'), chunked]);
  return rand() < 0.15 ? req.subarray(0, Math.floor(rand() * req.length)) : req; // cut off mid-way
}

function send(port: number, req: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.end(req));
    const done = (): void => { s.destroy(); resolve(); };
    s.on('data', () => {});
    s.on('close', done);
    s.on('error', done);
    s.setTimeout(5000, done);
  });
}

async function healthy(d: DaemonProcess): Promise<boolean> {
  if (d.proc.exitCode !== null || d.proc.signalCode !== null) return false;
  return (await fetch(`${d.url}/healthz`, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined))?.status === 200;
}

async function fuzzHttp(n: number): Promise<{ requests: number; crashes: number }> {
  let d = await spawnDaemon(['--data-dir', mkdtempSync(join(tmpdir(), 'alignd-fuzz-'))], { ALIGND_LOG_LEVEL: 'info' });
  let crashes = 0;
  let sent = 0;
  const concurrency = 8;
  while (sent < n) {
    const wave = Math.min(500, n - sent);
    for (let i = 0; i < wave; i += concurrency) {
      await Promise.all(Array.from({ length: Math.min(concurrency, wave - i) }, (_, j) => send(d.port, hostileRequest(sent + i + j))));
    }
    sent += wave;
    if (!(await healthy(d))) {
      crashes++;
      note(`the daemon stopped answering after ${sent} requests:\n${d.logs.slice(-20).join('\n')}`);
      await d.stop('SIGKILL');
      d = await spawnDaemon(['--data-dir', mkdtempSync(join(tmpdir(), 'alignd-fuzz-'))], { ALIGND_LOG_LEVEL: 'info' });
    }
  }
  await d.stop('SIGTERM');
  return { requests: sent, crashes };
}

async function poison(n: number): Promise<{ messages: number; stuck: number }> {
  const broker = await startBroker();
  try {
    const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING });
    const producer = kafka.producer();
    await producer.connect();
    const topics = [
      { topic: 'poison-at-limit', partitions: 3, dlq: undefined, poisonOf: () => Buffer.alloc(4 * 1024 * 1024 - 200, 'x') },
      { topic: 'poison-small-dlq', partitions: 3, dlq: { 'max.message.bytes': '20000' }, poisonOf: () => Buffer.from('{"not json' + 'y'.repeat(60_000)) },
      { topic: 'poison-no-dlq', partitions: 3, dlq: undefined, poisonOf: () => Buffer.from('{"not": json') },
    ];
    let messages = 0;
    let stuck = 0;
    for (const [k, spec] of topics.entries()) {
      await createTopics(broker.brokers, [{ topic: spec.topic, numPartitions: spec.partitions },
        ...(spec.dlq === undefined ? [] : [{ topic: `${spec.topic}.dlq`, config: spec.dlq }])]);
      const per = Math.ceil(n / topics.length);
      for (let i = 0; i < per; i++) {
        const partition = i % spec.partitions;
        // one record batch each: the poison message alone is at the topic's limit
        await producer.send({ topic: spec.topic, acks: -1, messages: [{ partition, key: 'demo', value: spec.poisonOf() }] });
        await producer.send({ topic: spec.topic, acks: -1, messages: Array.from({ length: 3 }, (_, j) =>
          ({ partition, key: 'demo', value: JSON.stringify(makeEvent(k * 100_000 + i * 10 + j, { event_id: `p-${k}-${i}-${j}` })) })) });
        messages++;
      }
      const buffer = openBuffer({ path: join(mkdtempSync(join(tmpdir(), 'alignd-poison-')), 'buffer.sqlite'), heldoutFraction: 0.1 });
      const source = createKafkaSource({ brokers: broker.brokers, topics: [spec.topic], groupId: `bench-${spec.topic}`, maxWaitTimeInMs: 100,
        retry: { initialRetryTime: 100, maxRetryTime: 500, retries: 1 }, ...(k === 2 ? { dlqTopic: 'dead/letters', createDlqTopics: false } : {}) }, { log: silentLogger });
      await source.start(createIngest({ buffer, limits: defaultLimits }));
      const deadline = Date.now() + 120_000;
      let last = await committedEqualsEnd(broker.brokers, `bench-${spec.topic}`, spec.topic);
      while (Date.now() < deadline && JSON.stringify(last.committed) !== JSON.stringify(last.end)) {
        await new Promise((r) => setTimeout(r, 250));
        last = await committedEqualsEnd(broker.brokers, `bench-${spec.topic}`, spec.topic);
      }
      await source.stop();
      for (const p of Object.keys(last.end)) if (last.committed[Number(p)] !== last.end[Number(p)]) stuck++;
      buffer.close();
    }
    await producer.disconnect();
    return { messages, stuck };
  } finally {
    await broker.close();
  }
}

const p99 = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round((s[Math.min(s.length - 1, Math.floor(0.99 * s.length))] ?? NaN) * 10) / 10;
};

async function healthzDuringBatch(): Promise<{ idle: number; during: number; batchMs: number; events: number }> {
  const d = await spawnDaemon(['--data-dir', mkdtempSync(join(tmpdir(), 'alignd-big-'))], { ALIGND_LOG_LEVEL: 'info' });
  try {
    const probe = async (until: () => boolean, min = 0): Promise<number[]> => {
      const out: number[] = [];
      while (!until() || out.length < min) {
        const t0 = performance.now();
        await (await fetch(`${d.url}/healthz`)).arrayBuffer();
        out.push(performance.now() - t0);
      }
      return out;
    };
    let n = 0;
    const idle = await probe(() => ++n > 200);
    const lines: string[] = [];
    // As close to http.maxBodyBytes (16 MiB) as whole lines get, never over it.
    for (let i = 0, size = 0; ; i++) {
      const l = JSON.stringify(makeEvent(1_000_000 + i, { kind: 'preference', chosen: `good answer ${i} ${'x'.repeat(150)}` }));
      if (size + l.length + 1 > 16 * 1024 * 1024) break;
      lines.push(l);
      size += l.length + 1;
    }
    let done = false;
    const t0 = performance.now();
    const batch = fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') + '\n' })
      .then(async (r) => { await r.arrayBuffer(); done = true; return r.status; });
    const during = await probe(() => done, 1);
    const status = await batch;
    if (status !== 202) throw new Error(`the 16 MB batch was answered ${status}`);
    return { idle: p99(idle), during: p99(during), batchMs: Math.round(performance.now() - t0), events: lines.length };
  } finally {
    await d.stop('SIGTERM');
  }
}

const fuzzN = env('BENCH_FUZZ', 10_000);
note(`fuzzing ${fuzzN} raw requests`);
const fuzz = await fuzzHttp(fuzzN);
note(`${fuzz.requests} requests, ${fuzz.crashes} crashes; /healthz during a 16 MB batch`);
const health = await healthzDuringBatch();
note(`p99 ${health.during} ms during, ${health.idle} ms idle; kill -9 during ingest`);
const ingest = await ingestKillTrials(env('BENCH_INGEST_KILLS', 100));
note(`${JSON.stringify(ingest)}; kill -9 during promotion`);
const promotion = await promotionKillTrials(env('BENCH_PROMOTION_KILLS', 100));
note(`${JSON.stringify(promotion)}; poison messages on a real broker`);
const poisoned = await poison(env('BENCH_POISON', 30));
process.stdout.write(JSON.stringify({
  bench: 'faults',
  http_requests: fuzz.requests, http_crashes: fuzz.crashes,
  ingest_kill_trials: ingest.trials, ingest_events: ingest.events, ingest_lost: ingest.lost, ingest_duplicated: ingest.duplicated,
  promotion_kill_trials: promotion.trials, promotion_versions_committed: promotion.committed, half_written_versions: promotion.halfWritten,
  audit_ok: promotion.auditOk, gc_bound_ok: promotion.gcBoundOk, deployed_ok: promotion.deployedOk, served_bad: promotion.servedBad,
  poison_messages: poisoned.messages, stuck_partitions: poisoned.stuck,
  healthz_p99_ms_16mb_batch: health.during, healthz_p99_ms_idle: health.idle, batch_16mb_events: health.events, batch_16mb_ms: health.batchMs,
}) + '\n');
process.exit(0);
