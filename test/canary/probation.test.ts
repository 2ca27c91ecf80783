/**
 * Probation's decisions on simulated live feedback with known truth (test/harness/live-users.ts):
 * equal versions are rarely rolled back (≤ α over many releases, read after every event) and
 * mostly leave as stable; a worse canary is rolled back naming the signal; safety limits per
 * feedback event and per exposure; a regression of one tenant; the timeout's documented default;
 * and a replay of the same stored events reaching the same decision (what a restart does).
 */
import t from 'tap';
import { policySchema, type RolloutPolicy } from '../../daemon/policy/schema.js';
import { startProbation, type Probation, type ProbationDecision } from '../../daemon/canary/probation.js';
import { liveUsers, TYPICAL, type LiveUsersOptions } from '../harness/live-users.js';
import { clopperPearson } from '../../daemon/stats/binomial.js';

const rollout = (over: Record<string, unknown> = {}): RolloutPolicy =>
  policySchema.parse({ model: 'm', base_model: { path: 'builtin:tiny' }, rollout: { enabled: true, ...over } }).rollout;
const versions = { canary: 'v2', baseline: 'v1' };

function run(p: Probation, next: () => ReturnType<ReturnType<typeof liveUsers>>, events: number): ProbationDecision | undefined {
  for (let i = 0; i < events; i++) {
    const d = p.observe(next());
    if (d !== undefined) return d;
  }
  return p.decision();
}

const users = (over: Partial<LiveUsersOptions>): ReturnType<typeof liveUsers> => liveUsers({ seed: 1, canary: TYPICAL, baseline: TYPICAL, canaryWeight: 0.5, ...over });

t.test('equal versions: rolled back in at most α of releases, and most leave probation as stable', async (t) => {
  const r = rollout({ min_events: 200, margin: 0.05 });
  const releases = 120;
  let rollbacks = 0;
  let stable = 0;
  for (let seed = 1; seed <= releases; seed++) {
    const p = startProbation({ rollout: r, versions, startedAt: 0, tenants: false, display: false });
    const d = run(p, users({ seed }), 40_000);
    if (d?.outcome === 'rollback') rollbacks++;
    if (d?.outcome === 'stable') stable++;
  }
  const lower = clopperPearson(rollbacks, releases, 0.99).lower;
  t.ok(lower <= 0.05, `false rollbacks ${rollbacks}/${releases} (99% lower bound ${lower.toFixed(3)} ≤ α = 0.05)`);
  t.ok(stable >= releases * 0.8, `stable in ${stable}/${releases} within 40 000 events (margin 0.05)`);
});

t.test('a canary 15 points worse on down-votes is rolled back, naming the signal, both versions and the bound', async (t) => {
  const p = startProbation({ rollout: rollout(), versions, startedAt: 0, tenants: false });
  const d = run(p, users({ seed: 7, canary: { ...TYPICAL, downShare: 0.35 } }), 20_000);
  t.equal(d?.outcome, 'rollback');
  t.equal(d?.trigger, 'down_vote_share');
  t.match(d?.reason, /v2 is confidently worse than v1 on down_vote_share v2 0\.\d+ vs v1 0\.\d+: difference \+0\.\d+, confidence sequence \[\+0\.\d+, \+0\.\d+\] over \d+ pairs/);
  const f = p.figures().metrics.find((m) => m.metric === 'down_vote_share')!;
  t.ok(f.worse.rejected && f.worse.logEvidence >= f.worse.threshold, 'the worse test crossed its threshold');
  t.ok(f.difference.lower! >= 0, `the drawn band agrees: lower bound ${f.difference.lower} ≥ 0`);
  t.ok(f.canary.lower! <= f.canary.estimate! && f.canary.estimate! <= f.canary.upper!, 'each arm has its own confidence sequence around its estimate');
  t.equal(p.observe(users({ seed: 8 })()), undefined, 'a decided probation takes no more decisions');
  const tl = p.timeline();
  t.ok(tl.length >= 2 && tl.length <= 201, `a bounded timeline (${tl.length} points)`);
  t.equal(tl.at(-1)?.canaryEvents, d?.canaryEvents, 'the last point is the decision');
});

t.test('mean rating and edit share are compared too', async (t) => {
  const worseRating = run(startProbation({ rollout: rollout(), versions, startedAt: 0, tenants: false, display: false }),
    users({ seed: 3, canary: { ...TYPICAL, rating: 0.45 } }), 20_000);
  t.match(worseRating, { outcome: 'rollback', trigger: 'mean_rating' });
  const moreEdits = run(startProbation({ rollout: rollout(), versions, startedAt: 0, tenants: false, display: false }),
    users({ seed: 4, canary: { ...TYPICAL, editShare: 0.2 } }), 20_000);
  t.match(moreEdits, { outcome: 'rollback', trigger: 'edit_share' });
});

t.test('safety reports over the absolute limit roll back, per feedback event and per exposure', async (t) => {
  const perEvent = run(startProbation({ rollout: rollout({ max_safety_report_rate: 0.05 }), versions, startedAt: 0, tenants: false }),
    users({ seed: 5, canary: { ...TYPICAL, safetyShare: 0.15 }, baseline: { ...TYPICAL, safetyShare: 0.15 } }), 20_000);
  t.match(perEvent, { outcome: 'rollback', trigger: 'safety_limit' }, 'equal versions, both over the limit: the limit is absolute');
  t.match(perEvent?.reason, /safety reports on v2 are confidently above the limit 0\.05 per feedback event/);

  // Per exposure: 1 report per 200 served responses against a limit of 1 in 1000.
  const r = rollout({ max_safety_report_rate: null, max_safety_reports_per_exposure: 0.001, metrics: ['down_vote_share'] });
  const lagging = startProbation({ rollout: r, versions, startedAt: 0, tenants: false, display: false });
  const fed = startProbation({ rollout: r, versions, startedAt: 0, tenants: false, display: false });
  let decided: ProbationDecision | undefined;
  for (let i = 1; i <= 200 && decided === undefined; i++) {
    const report = { arm: 'canary' as const, at: i, tenant: null, kind: 'safety_report' as const };
    t.equal(lagging.observe(report), undefined);
    fed.observe({ arm: 'canary', at: i, tenant: null, kind: 'exposure', count: 200 });
    decided = fed.observe(report);
  }
  t.match(decided, { outcome: 'rollback', trigger: 'safety_limit_per_exposure' });
  t.equal(lagging.decision(), undefined, 'without exposure counts the per-exposure limit cannot decide');
  t.equal(fed.figures().exposures.canary, 200 * decided!.canaryEvents);
});

t.test('a regression that hits one tenant is found by its own comparison', async (t) => {
  const tenants = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark', 'wayne', 'wonka'];
  const p = startProbation({ rollout: rollout({ metrics: ['down_vote_share'] }), versions, startedAt: 0, tenants: true, display: false });
  const d = run(p, users({ seed: 9, tenants, canaryByTenant: { acme: { ...TYPICAL, downShare: 0.7 } } }), 60_000);
  t.match(d, { outcome: 'rollback', trigger: 'down_vote_share', tenant: 'acme' });
  t.match(d?.reason, /for tenant acme on down_vote_share/);
  t.ok(Math.abs(p.figures().alpha.tenants - 0.025) < 1e-12, 'half of α spent over tenants');
});

t.test('max_hours: stable when every estimate is within its margin, otherwise hold for a person; on_timeout: hold always holds', async (t) => {
  const hour = 3_600_000;
  const r = rollout({ max_hours: 2, min_events: 50, margin: 0.02, metrics: ['down_vote_share'] });
  /** 60 binary events per arm, interleaved: `downs` of them down-votes on the canary (evenly spread), 12 on the baseline. */
  const feed = (p: Probation, downs: number): void => {
    for (let i = 0; i < 60; i++) {
      p.observe({ arm: 'baseline', at: i, tenant: null, kind: 'binary', label: i % 5 === 0 ? 'down' : 'up' });
      p.observe({ arm: 'canary', at: i, tenant: null, kind: 'binary', label: Math.floor(((i + 1) * downs) / 60) > Math.floor((i * downs) / 60) ? 'down' : 'up' });
    }
  };
  const better = startProbation({ rollout: r, versions, startedAt: 0, tenants: false });
  feed(better, 6);
  t.equal(better.decision(), undefined, '60 pairs decide nothing on their own');
  t.equal(better.expire(hour), undefined, 'not before max_hours');
  t.match(better.expire(2 * hour), { outcome: 'stable', trigger: 'timeout' });
  t.match(better.decision()?.reason, /2 h on probation without a confident decision; every estimated difference from v1 is within its margin, so stable/);
  t.match(better.decision()?.reason, /difference -0\.100/);

  const worse = startProbation({ rollout: r, versions, startedAt: 0, tenants: false });
  feed(worse, 14);
  t.equal(worse.decision(), undefined);
  const d = worse.expire(2 * hour);
  t.match(d, { outcome: 'hold', trigger: 'timeout' });
  t.match(d?.reason, /difference \+0\.033, .*estimated worse than the margin 0\.02/);
  t.match(d?.reason, /alignd approve MODEL v2` keeps it, `alignd rollback MODEL v1` rolls back/);

  const quiet = startProbation({ rollout: rollout({ max_hours: 1 }), versions, startedAt: 0, tenants: false });
  t.match(quiet.expire(hour)?.reason, /only 0 of min_events 200 feedback events on v2/, 'no traffic on the canary: hold');

  const holdAlways = startProbation({ rollout: { ...r, on_timeout: 'hold' }, versions, startedAt: 0, tenants: false });
  feed(holdAlways, 6);
  t.match(holdAlways.expire(2 * hour), { outcome: 'hold', trigger: 'timeout' });
});

t.test('a signal nobody reports is not compared; one reported on a single arm keeps it waiting', async (t) => {
  const binaryOnly = users({ seed: 14, binaryShare: 1, canary: { ...TYPICAL, editShare: 0, safetyShare: 0 }, baseline: { ...TYPICAL, editShare: 0, safetyShare: 0 } });
  const p = startProbation({ rollout: rollout({ margin: 0.05 }), versions, startedAt: 0, tenants: false });
  t.match(run(p, binaryOnly, 40_000), { outcome: 'stable', trigger: 'margin' }, 'no ratings at all: decided on the rest');
  t.match(p.decision()?.reason, /down_vote_share/);
  t.notMatch(p.decision()?.reason, /mean_rating/);

  const oneSided = startProbation({ rollout: rollout({ margin: 0.05, metrics: ['mean_rating'] }), versions, startedAt: 0, tenants: false, display: false });
  for (let i = 0; i < 5000; i++) oneSided.observe({ arm: 'canary', at: i, tenant: null, kind: 'rating', score: 0.8 });
  t.equal(oneSided.decision(), undefined, 'ratings on the canary only: nothing to compare them with');
});

t.test('the same stored events give the same decision and figures (a restart replays them)', async (t) => {
  const once = (): { d: ProbationDecision | undefined; f: unknown } => {
    const p = startProbation({ rollout: rollout(), versions, startedAt: 0, tenants: true });
    const d = run(p, users({ seed: 21, tenants: ['a', 'b'], canary: { ...TYPICAL, downShare: 0.3 } }), 20_000);
    return { d, f: p.figures() };
  };
  const a = once();
  const b = once();
  t.same(a.d, b.d);
  t.same(a.f, b.f);
});
