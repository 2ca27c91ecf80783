/**
 * SIGTERM while a round is training: the daemon stops taking events, abandons the round at the
 * next optimizer step (nothing of it is recorded or registered), and exits 0. A restart redoes it
 * (the kill -9 variant of that is in crash-restart.test.ts).
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnDaemon } from '../harness/daemon.js';
import { feedbackLines, stopWithin, waitFor, writeLoopPolicy, startLoopJudge } from '../harness/loop.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { openRegistry } from '../../daemon/registry/registry.js';

const MODEL = 'e2e';
const judge = await startLoopJudge();
t.teardown(() => judge.close());

t.test('SIGTERM during training abandons the round cleanly and exits 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-sigterm-'));
  // Far more steps than can finish before the signal: the round is surely mid-training.
  const policyFile = writeLoopPolicy(join(dir, 'e2e.yaml'), { model: MODEL, judge, fileDropDir: join(dir, 'served'), minNewExamples: 24, maxSteps: 100_000, learningRate: 5e-5 });
  const dataDir = join(dir, 'data');
  const d = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 60_000);
  t.teardown(() => d.stop('SIGKILL'));
  const r = await fetch(`${d.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: feedbackLines(MODEL, 60, 7, 'term').join('\n') });
  t.equal(r.status, 202);
  await waitFor(() => d.logs.some((l) => l.includes('"msg":"progress: policy.train"')), 120_000, 'the round to reach policy training', () => d.logs.slice(-20).join('\n'), 50);
  t.equal(await stopWithin(d, 'SIGTERM', 120_000), 0, 'exits 0 on SIGTERM');
  t.ok(d.logs.some((l) => l.includes('round abandoned for shutdown')), 'the round was abandoned at an optimizer step');
  t.notOk(d.logs.some((l) => l.includes('"msg":"round finished"')), 'the round did not finish');

  const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  try {
    t.same(buffer.roundResults(MODEL), [], 'no outcome recorded for the abandoned round (it is redone after a restart)');
    t.equal(buffer.counts().events, 60, 'every event answered 202 is in the buffer');
  } finally {
    buffer.close();
  }
  t.same(openRegistry(join(dataDir, 'registry'), MODEL).list(), [], 'no version registered');
});
