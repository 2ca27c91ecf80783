/**
 * bench:ingest — Kafka → alignd's durable buffer, against a raw kafkajs consume-only loop measured in
 * the same run on the same broker and topic.
 *
 *   npm run bench:ingest
 *   env: BENCH_EVENTS (200000), BENCH_PARTITIONS (4), BENCH_EVENT_BYTES (1024),
 *        BENCH_PARTITION_BYTES (fetch bytes per partition; default the source's), BENCH_CONCURRENCY (1)
 *
 * (a) raw: a kafkajs consumer group that only counts messages (same fetch settings as alignd);
 * (b) alignd: the Kafka source → ingest pipeline (JSON, zod, dedupe) → SQLite (WAL, one transaction
 *     per batch) → DLQ check → offsets committed, with its own group.
 * Throughput is measured from the group join to the last message (b: the last commit): the same
 * fetches are inside both clocks, the join itself in neither. p99_commit_ms is per batch: batch in
 * hand → its offsets committed.
 * Derivation of training examples is off here (it runs later, in chunks, in the daemon) and the
 * backpressure bound is above N so the source never pauses.
 * Each consuming phase runs in its own fresh node process (rss_mb is the alignd process's peak RSS).
 * The last line is one JSON object.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { createKafkaSource } from '../adapters/sources/kafka.js';
import { kafkaSourceConfigSchema } from '../daemon/ingest/kafka-source-config.js';
import { createIngest } from '../daemon/ingest/pipeline.js';
import { defaultLimits } from '../daemon/feedback/schema.js';
import type { RawFeedback } from '../daemon/feedback/sink.js';
import { createLogger } from '../daemon/base/log.js';
import { openBuffer } from '../daemon/store/buffer.js';
import { makeEventOfSize } from '../test/harness/events.js';
import { createTopics, startBroker } from '../test/harness/kafka.js';

const N = Number(process.env['BENCH_EVENTS'] ?? 200_000);
const PARTITIONS = Number(process.env['BENCH_PARTITIONS'] ?? 4);
const EVENT_BYTES = Number(process.env['BENCH_EVENT_BYTES'] ?? 1024);
const CONCURRENCY = Number(process.env['BENCH_CONCURRENCY'] ?? 1);
/** The source's own defaults, used by both loops; the fetch size per partition may be overridden. */
const defaults = kafkaSourceConfigSchema.parse({ brokers: ['-'], topics: ['-'] });
const fetch = {
  maxBytes: defaults.maxBytes,
  maxBytesPerPartition: Number(process.env['BENCH_PARTITION_BYTES'] ?? defaults.maxBytesPerPartition),
  minBytes: defaults.minBytes,
  maxWaitTimeInMs: defaults.maxWaitTimeInMs,
};

const say = (s: string): void => { process.stdout.write(s + '\n'); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function produce(brokers: string[], topic: string): Promise<void> {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const chunk = 2000;
  const inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < N; i += chunk) {
    const messages = [];
    for (let j = i; j < Math.min(N, i + chunk); j++) messages.push({ key: `m${j % 8}`, value: makeEventOfSize(j, EVENT_BYTES) });
    inFlight.push(producer.send({ topic, acks: -1, messages }));
    if (inFlight.length >= 4) await inFlight.shift();
  }
  await Promise.all(inFlight);
  await producer.disconnect();
}

/** (a) consume-only: count messages, let kafkajs resolve and auto-commit. */
async function rawConsume(brokers: string[], topic: string): Promise<{ seconds: number }> {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: 'bench-raw', ...fetch });
  let count = 0;
  let first = 0;
  let last = 0;
  consumer.on(consumer.events.GROUP_JOIN, () => { if (first === 0) first = performance.now(); });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    partitionsConsumedConcurrently: CONCURRENCY,
    eachBatch: async ({ batch }) => {
      count += batch.messages.length;
      if (count >= N && last === 0) last = performance.now();
    },
  });
  while (last === 0) await sleep(20);
  await consumer.disconnect();
  return { seconds: (last - first) / 1000 };
}

/** (b) alignd's full path into the durable buffer. */
async function aligndConsume(brokers: string[], topic: string, dir: string): Promise<{ seconds: number; commitMs: number[]; rssMb: number; stored: number }> {
  const buffer = openBuffer({ path: join(dir, 'bench.sqlite'), heldoutFraction: 0.1 });
  const log = createLogger({ bench: 'ingest' }, 'warn');
  const ingest = createIngest({ buffer, limits: defaultLimits, log });
  const commitMs: number[] = [];
  let first = 0;
  let last = 0;
  let committedMessages = 0;
  const source = createKafkaSource({
    brokers, topics: [topic], groupId: 'bench-alignd', ...fetch,
    pauseAbove: N + 1, resumeBelow: N,
    partitionsConsumedConcurrently: CONCURRENCY,
  }, {
    log,
    onGroupJoin: () => { if (first === 0) first = performance.now(); },
    onBatchCommitted: ({ messages, ms }) => {
      commitMs.push(ms);
      committedMessages += messages;
      if (committedMessages >= N && last === 0) last = performance.now();
    },
  });
  await source.start(ingest);
  while (last === 0) await sleep(20);
  await source.stop();
  const stored = buffer.counts().events;
  buffer.close();
  // peak RSS of this process, which ran only this phase
  return { seconds: (last - first) / 1000, commitMs, rssMb: process.resourceUsage().maxRSS / 1024, stored };
}

/** The ingest pipeline alone (no Kafka): same events, same batch size, a fresh buffer. Shows where a gap to raw lies. */
function pipelineOnly(dir: string, count: number, batchSize: number): number {
  const buffer = openBuffer({ path: join(dir, 'pipeline-only.sqlite'), heldoutFraction: 0.1 });
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const raws: RawFeedback[] = Array.from({ length: count }, (_, i) => ({
    bytes: Buffer.from(makeEventOfSize(N + i, EVENT_BYTES)), origin: { source: 'kafka', topic: 'x', partition: 0, offset: String(i) },
  }));
  const t0 = performance.now();
  for (let i = 0; i < count; i += batchSize) ingest.ingestBatch(raws.slice(i, i + batchSize));
  const seconds = (performance.now() - t0) / 1000;
  buffer.close();
  return count / seconds;
}

type PhaseResult =
  | { phase: 'raw'; seconds: number }
  | { phase: 'alignd'; seconds: number; commitMs: number[]; rssMb: number; stored: number };

/** Each consuming phase runs in a fresh node process: no heap left over from producing, a clean peak RSS. */
async function runPhase(phase: 'raw' | 'alignd', env: Record<string, string>): Promise<PhaseResult> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--phase', phase], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const code = await new Promise<number | null>((res) => child.on('exit', res));
  const last = out.trim().split('\n').pop() ?? '';
  if (code !== 0) throw new Error(`bench phase ${phase} exited ${code}: ${out.slice(-2000)}`);
  return JSON.parse(last) as PhaseResult;
}

async function phaseMain(phase: string): Promise<void> {
  const brokers = (process.env['BENCH_BROKERS'] ?? '').split(',');
  const topic = process.env['BENCH_TOPIC'] ?? '';
  const result: PhaseResult = phase === 'raw'
    ? { phase: 'raw', ...(await rawConsume(brokers, topic)) }
    : { phase: 'alignd', ...(await aligndConsume(brokers, topic, process.env['BENCH_DIR'] ?? tmpdir())) };
  say(JSON.stringify(result));
}

async function main(): Promise<void> {
  say(`bench:ingest: ${N} events of ~${EVENT_BYTES} B, ${PARTITIONS} partitions, ${fetch.maxBytesPerPartition} B fetch per partition`);
  const broker = await startBroker({ heap: '1g' });
  const dir = mkdtempSync(join(tmpdir(), 'alignd-bench-ingest-'));
  try {
    const topic = 'bench-feedback';
    await createTopics(broker.brokers, [{ topic, numPartitions: PARTITIONS }]);
    const t0 = performance.now();
    await produce(broker.brokers, topic);
    say(`produced ${N} events in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const env = { BENCH_BROKERS: broker.brokers.join(','), BENCH_TOPIC: topic, BENCH_DIR: dir };

    const raw = await runPhase('raw', env);
    const rawRate = N / raw.seconds;
    say(`raw kafkajs consume-only: ${raw.seconds.toFixed(2)} s, ${Math.round(rawRate)} events/s`);

    const full = await runPhase('alignd', env);
    if (full.phase !== 'alignd') throw new Error('bench: wrong phase result');
    const rate = N / full.seconds;
    if (full.stored !== N) throw new Error(`bench: stored ${full.stored} events, expected ${N}`);
    say(`alignd kafka → pipeline → SQLite: ${full.seconds.toFixed(2)} s, ${Math.round(rate)} events/s, ` +
      `${full.commitMs.length} batches, commit latency p50 ${percentile(full.commitMs, 50).toFixed(1)} ms ` +
      `p99 ${percentile(full.commitMs, 99).toFixed(1)} ms, peak RSS ${Math.round(full.rssMb)} MB`);
    const batchSize = Math.max(1, Math.round(N / full.commitMs.length));
    const alone = pipelineOnly(dir, Math.min(N, 50_000), batchSize);
    say(`ingest pipeline alone (validate → SQLite, no Kafka, batches of ${batchSize}): ${Math.round(alone)} events/s`);
    say(JSON.stringify({
      bench: 'ingest',
      events_per_s: Math.round(rate),
      raw_events_per_s: Math.round(rawRate),
      ratio_vs_raw: Number((rate / rawRate).toFixed(3)),
      p99_commit_ms: Number(percentile(full.commitMs, 99).toFixed(1)),
      rss_mb: Math.round(full.rssMb),
    }));
  } finally {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const phaseArg = process.argv[2] === '--phase' ? process.argv[3] : undefined;
(phaseArg === undefined ? main() : phaseMain(phaseArg)).catch((err: unknown) => {
  process.stderr.write(`bench:ingest failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
