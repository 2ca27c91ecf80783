/**
 * Two replicas of the real daemon on one data directory and one Kafka consumer group (a real
 * broker): exactly one runs the model's rounds, the holder of its lease (daemon/loop/lease.ts).
 * The holder is killed with SIGKILL; the other takes the lease over (its holder's pid is gone)
 * and runs the next round. Every round runs once: versions v1 (first replica) and v2 (second),
 * one outcome per round, the audit chain intact.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTopics, startBroker } from '../harness/kafka.js';
import { mainJs, spawnDaemon, type DaemonProcess } from '../harness/daemon.js';
import { feedbackLines, modelStatus, waitFor, writeLoopPolicy, startLoopJudge } from '../harness/loop.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { openRegistry } from '../../daemon/registry/registry.js';

const MODEL = 'replicated';
const TOPIC = 'alignd.feedback';
const dir = mkdtempSync(join(tmpdir(), 'alignd-replicas-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const broker = await startBroker();
t.teardown(() => broker.close());
await createTopics(broker.brokers, [{ topic: TOPIC, numPartitions: 2 }, { topic: 'alignd.promotions' }]);

const judge = await startLoopJudge();
t.teardown(() => judge.close());
const policyFile = writeLoopPolicy(join(dir, `${MODEL}.yaml`), { model: MODEL, judge, fileDropDir: join(dir, 'served'), minNewExamples: 24 });
const dataDir = join(dir, 'data');
const start = (): Promise<DaemonProcess> => spawnDaemon(['--policy', policyFile, '--data-dir', dataDir, '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
  { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info', ALIGND_LEASE_TTL_MS: '3000' }, 60_000);
const a = await start();
t.teardown(() => a.stop('SIGKILL'));
const b = await start();
t.teardown(() => b.stop('SIGKILL'));
const logs = (): string => [`A: ${a.logs.slice(-15).join('\nA: ')}`, `B: ${b.logs.slice(-15).join('\nB: ')}`].join('\n');
const roundsStarted = (d: DaemonProcess): number[] => d.logs.filter((l) => l.includes('"msg":"round started"')).map((l) => (JSON.parse(l) as { round: number }).round);
const leaseHeld = async (d: DaemonProcess): Promise<boolean> => ((await modelStatus(d.url, MODEL)) as { leaseHeld?: boolean } | undefined)?.leaseHeld === true;

function send(batch: number): void {
  const r = spawnSync(process.execPath, [mainJs, 'send', '-', '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
    { encoding: 'utf8', input: feedbackLines(MODEL, 40, batch, `rep${batch}`).join('\n') + '\n' });
  if (r.status !== 0) throw new Error(`alignd send failed: ${r.stderr}`);
}

t.test('one replica runs the rounds; SIGKILL hands the lease to the other, which runs the next', async (t) => {
  t.equal(await leaseHeld(a), true, 'the first replica took the lease');
  t.equal(await leaseHeld(b), false, 'the second waits');
  send(1);
  await waitFor(async () => (await modelStatus(a.url, MODEL))?.deployed === 'v1' && !(await modelStatus(a.url, MODEL))!.roundRunning, 240_000, 'v1 promoted by the first replica', logs);
  t.same(roundsStarted(a), [1], 'the holder ran round 1');
  t.same(roundsStarted(b), [], 'the other ran none');

  a.proc.kill('SIGKILL');
  await waitFor(() => leaseHeld(b), 30_000, 'the second replica to take the lease over', logs);
  t.ok(b.logs.some((l) => l.includes('lease taken') && l.includes('"token":2')), 'with fencing token 2');
  send(2);
  await waitFor(async () => (await modelStatus(b.url, MODEL))?.deployed === 'v2' && !(await modelStatus(b.url, MODEL))!.roundRunning, 300_000, 'v2 promoted by the second replica', logs);
  t.same(roundsStarted(b), [2], 'the new holder ran round 2');

  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  try {
    t.same(buffer.roundResults(MODEL).map((r) => [r.round, r.result.decision]), [[1, 'promote'], [2, 'promote']], 'one outcome per round');
    t.equal(buffer.counts().events, 80, 'every event once in the shared buffer');
  } finally {
    buffer.close();
  }
  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  t.same(reg.list().map((v) => v.version), ['v1', 'v2']);
  t.equal(reg.verifyAudit().ok, true, 'the audit chain written by both replicas verifies');
  t.equal(await b.stop('SIGTERM'), 0);
});
