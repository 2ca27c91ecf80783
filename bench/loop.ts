/**
 * bench:loop — the whole loop on the tiny model, on real parts: a Kafka broker (test harness, from
 * its Maven jars), the real daemon process (`dist/daemon/main.js start --kafka-brokers --policy`),
 * and the vLLM-speaking HTTP server of the test harness as the server target.
 *
 *   npm run bench:loop [-- --rounds 5 --soak-s 600 --rate 10 --poll-ms N]
 *
 * 1. Latency, feedback → promotion: after one warm-up round (base-model load), `--rounds` times, a batch of 40 preference events (enough for
 *    the policy's min_new_examples: 24 training pairs after the held-out split) is produced with
 *    kafkajs; the clock starts when the broker has acknowledged the batch and stops when the
 *    server has loaded the round's adapter `bench-vN` (polled every 10 ms in this process). It
 *    includes the scheduler's min-new-examples poll (the daemon's default, 5 s, unless --poll-ms),
 *    ingest, the round (reward heads, DPO steps, gate evaluation) and the push. p50/p95 over rounds.
 * 2. Soak: `--soak-s` seconds of continuous feedback (`--rate` events/s, one send per second);
 *    the daemon trains and promotes as data arrives (registry GC keeps 10 versions). The daemon's
 *    RSS (VmRSS of its /proc/<pid>/status) is sampled every second: start, peak, end.
 * The gate is the relaxed test policy of test/harness/loop.ts (every check runs; thresholds let a
 * round that trains be promoted), so every round is a promotion. Last line: one JSON object.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { arg } from './common.js';
import { createTopics, startBroker } from '../test/harness/kafka.js';
import { startFakeVllm } from '../test/harness/vllm-server.js';
import { spawnDaemon } from '../test/harness/daemon.js';
import { feedbackLines, modelStatus, rssMb, sleep, stopWithin, waitFor, writeLoopPolicy, startLoopJudge } from '../test/harness/loop.js';

const MODEL = 'bench';
const TOPIC = 'alignd.feedback';
const ROUNDS = Number(arg('rounds', '5'));
const SOAK_S = Number(arg('soak-s', '600'));
const RATE = Number(arg('rate', '10'));
const POLL_MS = arg('poll-ms', '');
const BATCH = 40;

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
};
const r2 = (x: number): number => Math.round(x * 100) / 100;
const say = (s: string): void => { process.stdout.write(s + '\n'); };

const dir = mkdtempSync(join(tmpdir(), 'alignd-bench-loop-'));
const broker = await startBroker();
let producer: Producer | undefined;
let judge: Awaited<ReturnType<typeof startLoopJudge>> | undefined;
try {
  await createTopics(broker.brokers, [{ topic: TOPIC, numPartitions: 2 }, { topic: 'alignd.promotions' }]);
  const vllm = await startFakeVllm();
  judge = await startLoopJudge();
  const policyFile = writeLoopPolicy(join(dir, 'bench.yaml'), { model: MODEL, judge, vllmUrls: [vllm.url], minNewExamples: 24 });
  const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', join(dir, 'data'), '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
    { ALIGND_LOG_LEVEL: 'info', ...(POLL_MS === '' ? {} : { ALIGND_LOOP_POLL_MS: POLL_MS }) }, 60_000);
  const pid = daemon.proc.pid!;
  producer = new Kafka({ clientId: 'bench-loop', brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  let seed = 1;
  const produce = async (n: number): Promise<void> => {
    const lines = feedbackLines(MODEL, n, seed, `s${seed}`);
    seed++;
    await producer!.send({ topic: TOPIC, acks: -1, messages: lines.map((value) => ({ key: MODEL, value })) });
  };
  say(`bench:loop — tiny model, Kafka ${broker.brokers.join(',')}, vLLM-speaking test server, daemon pid ${pid}; ` +
    `min-new-examples poll ${POLL_MS === '' ? 'daemon default' : `${POLL_MS} ms`}`);

  // 1. Feedback → promotion latency.
  // Round 0 is a warm-up (first base-model load, onnxruntime sessions); it is printed, not counted.
  const latencies: number[] = [];
  for (let i = 1; i <= ROUNDS + 1; i++) {
    const name = `${MODEL}-v${i}`;
    await produce(BATCH);
    const t0 = performance.now();
    await waitFor(() => vllm.loaded.has(name), 180_000, `${name} loaded at the server`, () => daemon.logs.slice(-20).join('\n'), 10);
    const s = (performance.now() - t0) / 1000;
    if (i > 1) latencies.push(s);
    say(`${i === 1 ? 'warm-up round' : `round ${i - 1}`}: ${BATCH} events produced → ${name} loaded at the server in ${r2(s)} s`);
    // Let the round record its outcome before the next batch (so each batch starts one round).
    await waitFor(async () => (await modelStatus(daemon.url, MODEL))?.roundRunning === false, 60_000, 'round end');
  }

  // 2. Soak with continuous feedback.
  const samples: number[] = [];
  const loadsBefore = vllm.calls.filter((c) => c.path === '/v1/load_lora_adapter').length;
  const roundsBefore = (await modelStatus(daemon.url, MODEL))?.lastRound ?? 0;
  const t0 = Date.now();
  while (Date.now() - t0 < SOAK_S * 1000) {
    const tick = Date.now();
    await produce(RATE);
    const rss = rssMb(pid);
    if (rss === undefined) throw new Error(`the daemon (pid ${pid}) is gone:\n${daemon.logs.slice(-30).join('\n')}`);
    samples.push(rss);
    if (samples.length % 60 === 0) say(`soak ${samples.length} s: rss ${r2(rss)} MB`);
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  const roundsAfter = (await modelStatus(daemon.url, MODEL))?.lastRound ?? 0;
  const promotions = vllm.calls.filter((c) => c.path === '/v1/load_lora_adapter').length - loadsBefore;
  say(`soak ${SOAK_S} s at ${RATE} events/s: ${roundsAfter - roundsBefore} rounds finished, ${promotions} adapters loaded at the server; rss samples ${samples.length}`);
  const code = await stopWithin(daemon, 'SIGTERM', 60_000);
  if (code !== 0) say(`warning: the daemon exited with ${String(code)} on SIGTERM`);
  await vllm.close();
  say(JSON.stringify({
    bench: 'loop', p50_s: r2(quantile(latencies, 0.5)), p95_s: r2(quantile(latencies, 0.95)),
    rss_start_mb: r2(samples[0] ?? NaN), rss_peak_mb: r2(Math.max(...samples)), rss_end_mb: r2(samples.at(-1) ?? NaN),
  }));
} finally {
  await producer?.disconnect().catch(() => undefined);
  await judge?.close();
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
}
