/**
 * END-TO-END: kill -9 the daemon in the middle of a training round, restart it
 * on the same data directory. Feedback arrives through a real Kafka broker before, during and
 * while the daemon is down. After the restart:
 * - the interrupted round has no recorded outcome and its data is trained by the redone round
 *   (whose window starts after the last round that finished: none);
 * - no event is lost or doubled: the buffer holds exactly the produced unique event ids, and the
 *   consumer group's committed offsets reach the end of the topic;
 * - the registry is consistent: no staging leftovers, every version's adapter matches its
 *   manifest, the audit hash chain verifies (`alignd registry verify`).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendToKafka } from '../../adapters/sources/kafka-send.js';
import { silentLogger } from '../../daemon/base/log.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { consoleProduce, createTopics, startBroker } from '../harness/kafka.js';
import { mainJs, spawnDaemon, type DaemonProcess } from '../harness/daemon.js';
import { feedbackLines, modelStatus, stopWithin, waitFor, writeLoopPolicy, startLoopJudge } from '../harness/loop.js';
import { committedEqualsEnd } from '../kafka/util.js';

const MODEL = 'e2e';
const TOPIC = 'alignd.feedback';
const dir = mkdtempSync(join(tmpdir(), 'alignd-e2e-crash-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const broker = await startBroker();
t.teardown(() => broker.close());
const judge = await startLoopJudge();
t.teardown(() => judge.close());
await createTopics(broker.brokers, [{ topic: TOPIC, numPartitions: 2 }]);

// A round long enough to be killed in (a few hundred small steps), the gate relaxed as in test 1.
const policyFile = writeLoopPolicy(join(dir, 'e2e.yaml'), { model: MODEL, judge, fileDropDir: join(dir, 'served'), minNewExamples: 24, maxSteps: 300, learningRate: 5e-5 });
const dataDir = join(dir, 'data');
const start = (): Promise<DaemonProcess> => spawnDaemon(['--policy', policyFile, '--data-dir', dataDir, '--kafka-brokers', broker.brokers.join(','), '--topic', TOPIC],
  { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 60_000);
const lines = (n: number, seed: number, prefix: string): string[] => feedbackLines(MODEL, n, seed, prefix);
const idsOf = (ls: string[]): string[] => ls.map((l) => (JSON.parse(l) as { event_id: string }).event_id);

t.test('kill -9 during a round, restart: round redone, no event lost, registry consistent', async (t) => {
  const before = lines(60, 1, 'before');
  const during = lines(30, 2, 'during');
  const down = lines(20, 3, 'down');
  const produced = new Set([...idsOf(before), ...idsOf(during), ...idsOf(down)]);

  const first = await start();
  t.teardown(() => first.stop('SIGKILL'));
  await sendToKafka({ brokers: broker.brokers, topic: TOPIC }, before, { log: silentLogger });
  const training = (): boolean => first.logs.some((l) => l.includes('"msg":"progress: policy.train"'));
  await waitFor(training, 120_000, 'round 1 to reach policy training', () => first.logs.slice(-30).join('\n'), 20);
  // More feedback (and replays of old events) while the round trains; then the crash.
  await sendToKafka({ brokers: broker.brokers, topic: TOPIC }, [...during, ...before.slice(0, 10)], { log: silentLogger });
  const status = await modelStatus(first.url, MODEL);
  t.equal(status?.roundRunning, true, 'a round is running when the daemon is killed');
  t.equal(await first.stop('SIGKILL'), null, 'killed by SIGKILL');
  t.notOk(first.logs.some((l) => l.includes('"msg":"round finished"')), 'the round did not finish before the kill');

  // Feedback produced while the daemon is down, through Kafka's own console producer.
  await consoleProduce(broker.brokers, TOPIC, down, { withKeys: false });

  const second = await start();
  t.teardown(() => second.stop('SIGKILL'));
  await waitFor(async () => {
    const s = await modelStatus(second.url, MODEL);
    return s !== undefined && s.lastRound !== null && !s.roundRunning;
  }, 200_000, 'a round to finish after the restart', () => second.logs.slice(-30).join('\n'));
  await waitFor(async () => {
    const r = await fetch(`${second.url}/v1/status`);
    return ((await r.json()) as { buffer: { events: number } }).buffer.events === produced.size;
  }, 60_000, `${produced.size} events in the buffer`, () => second.logs.slice(-30).join('\n'));
  // The restarted consumer gets the killed one's partitions only after the group drops the dead
  // member (session timeout): wait for its commits to reach the end before stopping it.
  await waitFor(async () => {
    const o = await committedEqualsEnd(broker.brokers, 'alignd-ingest', TOPIC);
    return JSON.stringify(o.committed) === JSON.stringify(o.end);
  }, 120_000, 'the restarted daemon to commit every partition', () => second.logs.slice(-30).join('\n'), 1000);
  // A round in hand when SIGTERM comes is finished or abandoned between phases: give it time.
  t.equal(await stopWithin(second, 'SIGTERM', 120_000), 0, 'the restarted daemon exits 0 on SIGTERM');

  // Kafka: every message committed (after it was durable in SQLite).
  const offsets = await committedEqualsEnd(broker.brokers, 'alignd-ingest', TOPIC);
  t.same(offsets.committed, offsets.end, 'committed offsets reach the end of the topic');

  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  try {
    const stored = (buffer.db.prepare('SELECT event_id FROM events').all() as Array<{ event_id: string }>).map((r) => r.event_id);
    t.equal(stored.length, produced.size, 'each produced event stored exactly once');
    t.same(new Set(stored), produced, 'the stored ids are the produced ids');
    const results = buffer.roundResults(MODEL);
    const marked = (buffer.db.prepare('SELECT round FROM rounds WHERE model = ? ORDER BY round').all(MODEL) as Array<{ round: number }>).map((r) => r.round);
    t.equal(marked[0], 1, 'the killed round was round 1');
    t.notOk(results.some((r) => r.round === 1), 'the killed round has no recorded outcome (never half-applied)');
    const redone = results[0];
    t.ok(redone !== undefined && redone.round > 1, 'a later round finished after the restart');
    t.not(redone?.result.decision, undefined, 'the redone round has a decision');
    t.ok((redone?.result.newExamples as number) >= 24, 'the redone round trained the interrupted round\'s data (its window starts at the beginning)');
  } finally {
    buffer.close();
  }

  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  const staging = join(reg.dir, '.staging');
  t.same(existsSync(staging) ? readdirSync(staging) : [], [], 'no half-written version left in staging');
  const versions = reg.list();
  for (const v of versions) t.ok(reg.verifyVersion(v.version).ok, `${v.version}: adapter matches its manifest`);
  t.ok(versions.every((v) => (v.manifest.data_window as { round: number }).round > 1), 'every version comes from a round after the restart');
  const r = spawnSync(process.execPath, [mainJs, 'registry', 'verify', MODEL, '--data-dir', dataDir], { encoding: 'utf8' });
  if (versions.length > 0) {
    t.equal(r.status, 0, 'alignd registry verify exits 0', { stdout: r.stdout, stderr: r.stderr });
    t.equal((JSON.parse(r.stdout) as { ok: boolean }).ok, true, 'versions and audit chain verify');
  } else {
    t.ok(reg.verifyAudit().ok, 'the audit chain verifies');
  }
});
