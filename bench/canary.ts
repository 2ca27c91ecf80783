/**
 * bench:canary — how probation (daemon/canary/probation.ts) decides on simulated releases with
 * known truth, read after EVERY event (continuous monitoring, as the daemon does):
 *
 *   npm run bench:canary [-- --equal 400 --worse 200 --weight 0.1 --horizon 200000]
 *
 * Simulated users (test/harness/live-users.ts) give feedback on a canary and its baseline served
 * side by side (a staged rollout, --weight of traffic on the canary): binary thumbs, 1–5 ratings,
 * edits and safety reports, with the baseline's down-vote share 0.2. Releases:
 * - equal: the canary behaves exactly like the baseline → any rollback is a false rollback;
 * - worse by 5 and by 10 points of down-vote share, everything else equal → a rollback is a detection.
 * Each release runs until probation decides or --horizon feedback events (both versions) have
 * passed; the policy is the schema's default rollout (every signal, confidence 0.95, margin
 * 0.02, safety limit 0.05) with --weight as its canary weight. One JSON line: the false-rollback rate
 * with its 95% Clopper–Pearson upper bound, how often equal releases left as stable and after how
 * many events, and per worse scenario the detection rate and the median events to detect (all
 * feedback events since the promotion, and those on the canary).
 */
import { arg, median } from './common.js';
import { policySchema } from '../daemon/policy/schema.js';
import { startProbation, type ProbationDecision } from '../daemon/canary/probation.js';
import { clopperPearson } from '../daemon/stats/binomial.js';
import { liveUsers, TYPICAL, type VersionBehaviour } from '../test/harness/live-users.js';

const EQUAL = Number(arg('equal', '400'));
const WORSE = Number(arg('worse', '200'));
const WEIGHT = Number(arg('weight', '0.1'));
const HORIZON = Number(arg('horizon', '200000'));

const rollout = policySchema.parse({ model: 'bench', base_model: { path: 'builtin:tiny' }, rollout: { enabled: true, canary_weight: WEIGHT } }).rollout;

interface Result { decision: ProbationDecision | undefined; events: number }

function release(seed: number, canary: VersionBehaviour): Result {
  const p = startProbation({ rollout, versions: { canary: 'v2', baseline: 'v1' }, startedAt: 0, tenants: false, display: false });
  const next = liveUsers({ seed, canary, baseline: TYPICAL, canaryWeight: WEIGHT });
  for (let events = 1; events <= HORIZON; events++) {
    const d = p.observe(next());
    if (d !== undefined) return { decision: d, events };
  }
  return { decision: undefined, events: HORIZON };
}

const r4 = (x: number): number => Math.round(x * 1e4) / 1e4;
const t0 = Date.now();

const equal = Array.from({ length: EQUAL }, (_, i) => release(1_000 + i, TYPICAL));
const falseRollbacks = equal.filter((r) => r.decision?.outcome === 'rollback').length;
const stable = equal.filter((r) => r.decision?.outcome === 'stable');

function worse(points: number, seedBase: number): Record<string, number> {
  const runs = Array.from({ length: WORSE }, (_, i) => release(seedBase + i, { ...TYPICAL, downShare: TYPICAL.downShare + points / 100 }));
  const found = runs.filter((r) => r.decision?.outcome === 'rollback');
  return {
    releases: runs.length,
    detection_rate: r4(found.length / runs.length),
    median_events_to_detect: found.length === 0 ? NaN : median(found.map((r) => r.events)),
    median_canary_events_to_detect: found.length === 0 ? NaN : median(found.map((r) => r.decision!.canaryEvents)),
    detected_by_down_vote_share: found.filter((r) => r.decision?.trigger === 'down_vote_share').length,
    called_stable: runs.filter((r) => r.decision?.outcome === 'stable').length,
  };
}

const line = {
  bench: 'canary',
  setup: { canary_weight: WEIGHT, baseline_down_vote_share: TYPICAL.downShare, horizon_events: HORIZON, confidence: rollout.confidence,
    margin: rollout.margin, metrics: rollout.metrics.map((m) => m.metric), monitoring: 'decision read after every event' },
  equal: {
    releases: EQUAL,
    false_rollback_rate: r4(falseRollbacks / EQUAL),
    false_rollback_upper95: r4(clopperPearson(falseRollbacks, EQUAL, 0.95).upper),
    stable_rate: r4(stable.length / EQUAL),
    median_events_to_stable: stable.length === 0 ? NaN : median(stable.map((r) => r.events)),
  },
  worse_5_points: worse(5, 100_000),
  worse_10_points: worse(10, 200_000),
  seconds: Math.round((Date.now() - t0) / 1000),
};
process.stdout.write(JSON.stringify(line) + '\n');
