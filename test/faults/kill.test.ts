/**
 * kill -9 at random points of ingest and promotion (a few trials here; `npm run bench:faults`
 * runs hundreds): nothing acknowledged is lost, nothing is stored or derived twice, no version is
 * half-written, the audit chain verifies and gc keeps its bound. The registry writer's own crash
 * test (test/registry) covers version writes without promotion.
 */
import t from 'tap';
import { ingestKillTrials, promotionKillTrials } from '../harness/kill-trials.js';

t.test('kill -9 during HTTP ingest: lost 0, duplicated 0', async (t) => {
  const r = await ingestKillTrials(4);
  t.ok(r.acknowledged > 0, `events were acknowledged between kills (${r.acknowledged} of ${r.events})`);
  t.equal(r.lost, 0, 'every event is stored, every acknowledged one was');
  t.equal(r.duplicated, 0, 'nothing stored or derived twice');
  t.equal(r.stored, r.events);
});

t.test('kill -9 during promotion to a file-drop target: whole versions, a sound audit chain, gc bound', async (t) => {
  const r = await promotionKillTrials(10);
  t.ok(r.committed >= 3, `versions were committed across trials (${r.committed})`);
  t.same(r.problems, [], 'nothing half-written or inconsistent');
  t.equal(r.halfWritten, 0);
  t.ok(r.auditOk && r.gcBoundOk && r.deployedOk, JSON.stringify(r));
  t.equal(r.servedBad, 0);
});
