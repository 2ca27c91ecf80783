/**
 * END-TO-END: the whole loop on real parts. A real Kafka broker (from its Maven
 * jars) carries feedback produced by kafkajs (`alignd send --kafka-brokers`) and by Kafka's own
 * console producer; the real daemon (`node dist/daemon/main.js start --kafka-brokers ... --policy`)
 * ingests it into SQLite, trains the tiny model on onnxruntime, the gate promotes, and a real
 * HTTP server speaking vLLM's runtime-LoRA API receives `e2e-v1`, `e2e-v2`, `e2e-v3`. Each
 * promotion is announced on `alignd.promotions`. Then `alignd rollback e2e v1` edits the policy
 * file; the running daemon reloads it and serves v1 again: v1 (retired from the server after v3)
 * is loaded again, the status and deployed.json say v1, and the audit log has `deployment.pinned`.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { consoleProduce } from '../harness/kafka.js';
import { mainJs, spawnDaemon } from '../harness/daemon.js';
import { feedbackLines, modelStatus, startLoopRig, stopWithin, waitFor, writeLoopPolicy } from '../harness/loop.js';
import { readTopic } from '../kafka/util.js';
import { openRegistry } from '../../daemon/registry/registry.js';

const MODEL = 'e2e';
const TOPIC = 'alignd.feedback';
const { dir, broker, vllm, judge } = await startLoopRig(t, 'alignd-e2e-kafka-', TOPIC);

const policyFile = writeLoopPolicy(join(dir, 'e2e.yaml'), { model: MODEL, judge, vllmUrls: [vllm.url], minNewExamples: 24 });
const dataDir = join(dir, 'data');
const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir, '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
  { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 60_000);
t.teardown(() => daemon.stop('SIGKILL'));
const logTail = (): string => daemon.logs.slice(-40).join('\n');

/** `alignd <args>` as a user runs it; returns stdout, fails the test on a non-zero exit. */
function cli(tt: Test, args: string[], input?: string): string {
  const r = spawnSync(process.execPath, [mainJs, ...args], { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
  tt.equal(r.status, 0, `alignd ${args.slice(0, 2).join(' ')} exits 0`, { stderr: r.stderr });
  return r.stdout;
}

async function bufferEvents(): Promise<number> {
  const r = await fetch(`${daemon.url}/v1/status`);
  return ((await r.json()) as { buffer: { events: number } }).buffer.events;
}

/** Half a batch through kafkajs (the CLI), half through the console producer (key = model). */
async function produceBatch(tt: Test, batch: number): Promise<void> {
  const viaKafkajs = feedbackLines(MODEL, 20, 100 + batch, `b${batch}-kafkajs`);
  const viaConsole = feedbackLines(MODEL, 20, 200 + batch, `b${batch}-console`);
  const out = cli(tt, ['send', '-', '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC], viaKafkajs.join('\n') + '\n');
  tt.match(JSON.parse(out), { sent: 20, target: 'kafka' }, 'alignd send produced 20 events through kafkajs');
  await consoleProduce(broker.brokers, TOPIC, viaConsole.map((l) => `${MODEL}\t${l}`), { withKeys: true });
}

async function waitPromoted(version: string): Promise<void> {
  await waitFor(async () => {
    const s = await modelStatus(daemon.url, MODEL);
    // The round records its outcome just after the gate's promotion: wait for both.
    return s?.deployed === version && s.complete === true && !s.roundRunning && vllm.loaded.has(`${MODEL}-${version}`);
  }, 150_000, `${MODEL}-${version} promoted and loaded at the vLLM server`, logTail);
}

t.test('feedback from kafkajs and the console producer trains, promotes and reaches the vLLM server', async (t) => {
  for (const [batch, version] of [[1, 'v1'], [2, 'v2'], [3, 'v3']] as const) {
    await produceBatch(t, batch);
    // Every event of both producers is in the buffer: 40 distinct ids per batch.
    await waitFor(async () => (await bufferEvents()) === 40 * batch, 60_000, `${40 * batch} events in the buffer`, logTail);
    await waitPromoted(version);
    const s = await modelStatus(daemon.url, MODEL);
    t.equal(s?.serverName, `${MODEL}-${version}`, `status names the served adapter ${MODEL}-${version}`);
    t.equal(s?.lastDecision, 'promote', 'the gate promoted the round');
  }
  const loads = vllm.calls.filter((c) => c.path === '/v1/load_lora_adapter').map((c) => c.body?.['lora_name']);
  t.same(loads, ['e2e-v1', 'e2e-v2', 'e2e-v3'], 'the server received each version once, in order');
  // The adapter path the server was given is the registry's copy of that version.
  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  t.equal(vllm.loaded.get('e2e-v2'), reg.get('v2')?.adapterDir, 'e2e-v2 loaded from the registry version v2');
  t.notOk(vllm.loaded.has('e2e-v1'), 'v1 retired from the server once v3 was promoted (v2 kept for a fast rollback)');

  // Promotions announced on Kafka (kafkaAnnouncer is wired when Kafka is configured).
  const announced = await readTopic(broker.brokers, 'alignd.promotions', 3, 30_000);
  const bodies = announced.map((m) => JSON.parse(m.value?.toString() ?? '{}') as { model: string; version: string; name: string; schema: string });
  t.same(bodies.map((b) => b.version), ['v1', 'v2', 'v3'], 'three promotions announced, in order');
  t.ok(bodies.every((b) => b.schema === 'alignd.promotion/v1' && b.model === MODEL && b.name === `${MODEL}-${b.version}`), 'announcements name model and served adapter');
  t.ok(announced.every((m) => m.key === MODEL), 'announcements keyed by model');
});

t.test('alignd rollback e2e v1 edits the policy; the daemon serves v1 again', async (t) => {
  const callsBefore = vllm.calls.length;
  const out = cli(t, ['rollback', MODEL, 'v1', '--policy', policyFile, '--data-dir', dataDir]);
  t.match(out, /deployment pinned to v1/, 'the CLI reports the pin');
  t.match(readFileSync(policyFile, 'utf8'), /mode: pinned/, 'the policy file now pins a version');
  await waitFor(async () => {
    const s = await modelStatus(daemon.url, MODEL);
    return s?.mode === 'pinned' && s.deployed === 'v1' && s.complete === true && vllm.loaded.has('e2e-v1');
  }, 60_000, 'v1 served again after the pin', logTail);

  const after = vllm.calls.slice(callsBefore);
  t.ok(after.some((c) => c.path === '/v1/load_lora_adapter' && c.body?.['lora_name'] === 'e2e-v1'), 'the server was asked to load e2e-v1 again');
  t.equal((await modelStatus(daemon.url, MODEL))?.serverName, 'e2e-v1', 'status names e2e-v1');
  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  const d = reg.deployment();
  t.equal(d?.desired, 'v1', 'deployed.json: desired v1');
  t.equal(d?.targets[`vllm:${vllm.url}`]?.version, 'v1', 'deployed.json: the vLLM target confirmed v1');
  const audit = reg.auditRecords();
  const pinned = audit.filter((r) => r.event === 'deployment.pinned');
  t.equal(pinned.length, 1, 'one deployment.pinned record');
  t.match(pinned[0], { version: 'v1', previous: 'v3' }, 'the pin record names v1 and the version it replaced');
  t.ok(audit.some((r) => r.event === 'promote.done' && r['version'] === 'v1' && String(r['reason']).includes('pinned')),
    'promote.done for v1, by the policy pin');
  t.ok(reg.verifyAudit().ok, 'the audit hash chain verifies');
  const verify = JSON.parse(cli(t, ['registry', 'verify', MODEL, '--data-dir', dataDir])) as { ok: boolean };
  t.equal(verify.ok, true, 'alignd registry verify: every version and the audit chain are intact');

  t.equal(await stopWithin(daemon, 'SIGTERM', 30_000), 0, 'the daemon exits 0 on SIGTERM (Kafka producer and consumer closed)');
});
