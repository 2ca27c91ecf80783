/**
 * Probation of one promoted version, pure: stored events in (in the order alignd stored them),
 * a decision out — stable, rollback or hold — with the figures and confidence sequences behind it.
 *
 * Per compared signal (./signals.ts) the canary's and the baseline's observations are paired in
 * arrival order (stats/pairing.ts) and the harm difference D = canary − baseline ∈ [−1, 1] is
 * tested by betting (stats/confidence-sequence.ts, Waudby-Smith & Ramdas 2024), after every event:
 *
 * - worse:     H0: E[D] ≤ 0 rejected → the canary is confidently worse → rollback.
 * - not worse: H0: E[D] ≥ margin rejected → confidently within the non-inferiority margin.
 *   stable = at least min_events feedback events on the canary and every signal observed on
 *   either arm confidently within its margin.
 * - safety limit: safety reports per feedback event (and per exposure, when exposures are
 *   reported) confidently above the absolute limit (stats/rate-evidence.ts) → rollback.
 * - max_hours without a decision → `on_timeout` (see `expire`).
 *
 * Error rates, with α = 1 − confidence, valid however often the figures are read:
 * - P(ever rolling back a canary that is no worse on any signal and within the safety limits) ≤ α:
 *   every rollback test gets a share of α (Bonferroni): the pooled signals and safety limits split
 *   α, or α/2 when tenants are compared too, and the j-th tenant seen gets (α/2)·6/(π²j²) split
 *   over the signals (Σ 6/(π²j²) = 1, so any number of tenants stays within α/2).
 * - P(calling stable a canary worse than the margin on some signal) ≤ α: stable needs every signal
 *   to pass its own level-α test, an intersection–union test (Berger 1982, Technometrics 24), so no
 *   split is needed.
 * At max_hours, `stable_if_not_worse` (the default) calls stable a canary that had min_events and
 * whose every estimated difference is within its margin (and safety rate within its limit), and
 * holds the rest for a person; that stable is outside the guarantees above, by design: it is the
 * documented default for a canary that stayed inconclusive for the whole watch.
 */
import type { RolloutMetric, RolloutPolicy } from '../policy/schema.js';
import { bettingConfidenceSequence, sequentialMeanTest, type ConfidenceSequence, type SequentialMeanTest } from '../stats/confidence-sequence.js';
import { arrivalPairing, differenceToUnit, unitToDifference, type Arm, type Pairing } from '../stats/pairing.js';
import { logRateEvidence } from '../stats/rate-evidence.js';
import { harm, type ProbationEvent } from './signals.js';

export type Outcome = 'stable' | 'rollback' | 'hold';

export interface ProbationDecision {
  outcome: Outcome;
  /** One sentence a person can act on. */
  reason: string;
  /** What decided: a metric name, `safety_limit`, `safety_limit_per_exposure`, `margin` (stable) or `timeout`. */
  trigger: string;
  tenant?: string;
  /** Feedback events on the canary when it was decided. */
  canaryEvents: number;
  /** Time of the event (or the expiry check) that decided, ms. */
  at: number;
}

export interface ProbationOptions {
  rollout: RolloutPolicy;
  versions: { canary: string; baseline: string };
  /** When the canary started serving (ms): max_hours counts from here. */
  startedAt: number;
  /** Compare each tenant too (the previous version's feedback carries tenants). */
  tenants: boolean;
  /** Keep confidence sequences per arm and of the difference, and a timeline of them (off in the bench: speed). */
  display?: boolean;
}

/** Estimate with its confidence sequence at this moment (bounds absent without `display`). */
export interface Estimate { n: number; estimate: number | null; lower?: number; upper?: number }

export interface MetricFigures {
  metric: RolloutMetric;
  margin: number;
  pairs: number;
  canary: Estimate;
  baseline: Estimate;
  /** The paired harm difference canary − baseline. */
  difference: Estimate;
  /** log of the betting capital against "not worse" (rollback at ≥ threshold) and against "worse than the margin" (stable side). */
  worse: { logEvidence: number; threshold: number; rejected: boolean };
  withinMargin: { logEvidence: number; threshold: number; rejected: boolean };
}

export interface ProbationFigures {
  versions: { canary: string; baseline: string };
  canaryEvents: number;
  baselineEvents: number;
  exposures: { canary: number; baseline: number };
  safetyReports: { canary: number; baseline: number };
  alpha: { total: number; perPooledTest: number; tenants: number };
  metrics: MetricFigures[];
  tenantsCompared: number;
}

/** One point of the timeline the status page draws: [estimate, lower, upper] per series. */
export interface ProbationPoint {
  at: number;
  canaryEvents: number;
  metrics: Partial<Record<RolloutMetric, { canary: [number, number, number]; baseline: [number, number, number]; difference: [number, number, number] }>>;
}

export interface Probation {
  /** Feed the next stored event; returns the decision the moment it is reached (once). */
  observe(e: ProbationEvent): ProbationDecision | undefined;
  /** Check max_hours at `now` (ms); returns the timeout decision when it is reached. */
  expire(now: number): ProbationDecision | undefined;
  decision(): ProbationDecision | undefined;
  figures(): ProbationFigures;
  timeline(): ProbationPoint[];
}

const TIMELINE_POINTS = 200;
/** Unpaired observations kept per arm of one tenant's comparison. */
const TENANT_QUEUE = 1000;

interface ArmSums { n: number; sum: number; cs: ConfidenceSequence | undefined }

interface Comparison {
  metric: RolloutMetric;
  margin: number;
  pairing: Pairing;
  pairSum: number;
  worse: SequentialMeanTest;
  withinMargin: SequentialMeanTest;
  arms: Record<Arm, ArmSums>;
  difference: ConfidenceSequence | undefined;
}

interface TenantComparison { pairing: Pairing; worse: SequentialMeanTest }

const fmt = (x: number, sign = false): string => (Number.isFinite(x) ? `${sign && x >= 0 ? '+' : ''}${x.toFixed(3)}` : 'n/a');

export function startProbation(o: ProbationOptions): Probation {
  const r = o.rollout;
  const display = o.display ?? true;
  const alpha = 1 - r.confidence;
  const metrics = r.metrics.map((m) => ({ metric: m.metric, margin: m.margin ?? r.margin }));
  const safetyTests = (r.max_safety_report_rate === null ? 0 : 1) + (r.max_safety_reports_per_exposure === null ? 0 : 1);
  const alphaTenants = o.tenants && r.per_tenant ? alpha / 2 : 0;
  const alphaPooled = (alpha - alphaTenants) / (metrics.length + safetyTests);
  const { canary: vc, baseline: vb } = o.versions;

  const comparisons: Comparison[] = metrics.map(({ metric, margin }) => ({
    metric, margin, pairing: arrivalPairing(Math.max(10_000, r.baseline_events)), pairSum: 0,
    worse: sequentialMeanTest(differenceToUnit(0), 'above', alphaPooled),
    withinMargin: sequentialMeanTest(differenceToUnit(margin), 'below', alpha),
    arms: {
      canary: { n: 0, sum: 0, cs: display ? bettingConfidenceSequence(alpha) : undefined },
      baseline: { n: 0, sum: 0, cs: display ? bettingConfidenceSequence(alpha) : undefined },
    },
    // The difference's lower bound at the rollback level and its upper bound at the stable level:
    // the band the status page draws is the one the decisions read.
    difference: display ? bettingConfidenceSequence({ alphaLower: alphaPooled, alphaUpper: alpha }, 201) : undefined,
  }));
  const tenantOrder = new Map<string, number>();
  const tenantTests = new Map<string, TenantComparison>();
  const counts = { canary: 0, baseline: 0 };
  const exposures = { canary: 0, baseline: 0 };
  const reports = { canary: 0, baseline: 0 };
  let decided: ProbationDecision | undefined;
  let lastAt = o.startedAt;
  const timeline: ProbationPoint[] = [];
  let every = 5;

  const tenantAlpha = (j: number): number => (alphaTenants * 6 / (Math.PI ** 2 * j * j)) / metrics.length;

  const tenantTest = (tenant: string, metric: RolloutMetric): TenantComparison => {
    const key = `${metric}\0${tenant}`;
    let tc = tenantTests.get(key);
    if (tc === undefined) {
      // Pairing takes the most recent partner, so a short queue per tenant loses little and bounds memory with many tenants.
      tc = { pairing: arrivalPairing(TENANT_QUEUE), worse: sequentialMeanTest(differenceToUnit(0), 'above', tenantAlpha(tenantOrder.get(tenant) ?? 1)) };
      tenantTests.set(key, tc);
    }
    return tc;
  };

  const estimateOf = (a: ArmSums): Estimate => {
    const est: Estimate = { n: a.n, estimate: a.n === 0 ? null : a.sum / a.n };
    if (a.cs !== undefined && a.n > 0) {
      const b = a.cs.bounds();
      est.lower = b.lower;
      est.upper = b.upper;
    }
    return est;
  };
  const differenceOf = (c: Comparison): Estimate => {
    const n = c.pairing.pairs();
    const est: Estimate = { n, estimate: n === 0 ? null : c.pairSum / n };
    if (c.difference !== undefined && n > 0) {
      const b = c.difference.bounds();
      est.lower = unitToDifference(b.lower);
      est.upper = unitToDifference(b.upper);
    }
    return est;
  };
  const describe = (c: Comparison): string => {
    const d = differenceOf(c);
    const cn = estimateOf(c.arms.canary);
    const bs = estimateOf(c.arms.baseline);
    const band = d.lower === undefined ? '' : `, confidence sequence [${fmt(d.lower, true)}, ${fmt(d.upper!, true)}]`;
    return `${c.metric}${c.metric === 'mean_rating' ? ' (as 1 − rating)' : ''} ${vc} ${fmt(cn.estimate ?? NaN)} vs ${vb} ${fmt(bs.estimate ?? NaN)}: difference ${fmt(d.estimate ?? NaN, true)}${band} over ${d.n} pairs`;
  };

  const decide = (d: Omit<ProbationDecision, 'canaryEvents' | 'at'>): ProbationDecision => {
    decided = { ...d, canaryEvents: counts.canary, at: lastAt };
    point(true);
    return decided;
  };

  function point(force: boolean): void {
    if (!display) return;
    if (!force && counts.canary % every !== 0) return;
    const p: ProbationPoint = { at: lastAt, canaryEvents: counts.canary, metrics: {} };
    for (const c of comparisons) {
      const cn = estimateOf(c.arms.canary);
      const bs = estimateOf(c.arms.baseline);
      const d = differenceOf(c);
      if (cn.estimate === null && bs.estimate === null) continue;
      const triple = (e: Estimate): [number, number, number] => [e.estimate ?? NaN, e.lower ?? NaN, e.upper ?? NaN];
      p.metrics[c.metric] = { canary: triple(cn), baseline: triple(bs), difference: triple(d) };
    }
    if (timeline.at(-1)?.canaryEvents === p.canaryEvents) timeline.pop();
    timeline.push(p);
    if (timeline.length > TIMELINE_POINTS) {
      // Thin to every other point and record half as often: the timeline stays bounded.
      for (let i = timeline.length - 2; i > 0; i -= 2) timeline.splice(i, 1);
      every *= 2;
    }
  }

  function checkRollback(): ProbationDecision | undefined {
    for (const c of comparisons) {
      if (c.worse.rejected()) {
        return decide({ outcome: 'rollback', trigger: c.metric,
          reason: `${vc} is confidently worse than ${vb} on ${describe(c)} (evidence reached 1/α = ${Math.round(1 / c.worse.alpha)})` });
      }
    }
    for (const [key, tc] of tenantTests) {
      if (!tc.worse.rejected()) continue;
      const [metric, tenant] = key.split('\0') as [RolloutMetric, string];
      return decide({ outcome: 'rollback', trigger: metric, tenant,
        reason: `${vc} is confidently worse than ${vb} for tenant ${tenant} on ${metric} over ${tc.pairing.pairs()} pairs (evidence reached 1/α = ${Math.round(1 / tc.worse.alpha)})` });
    }
    const feedback = counts.canary;
    if (r.max_safety_report_rate !== null && reports.canary > 0
      && logRateEvidence(reports.canary, feedback, r.max_safety_report_rate) >= Math.log(1 / alphaPooled)) {
      return decide({ outcome: 'rollback', trigger: 'safety_limit',
        reason: `safety reports on ${vc} are confidently above the limit ${r.max_safety_report_rate} per feedback event (${reports.canary} of ${feedback} = ${fmt(reports.canary / feedback)})` });
    }
    // Exposure counts can lag the reports they explain; the per-exposure test waits until they catch up.
    if (r.max_safety_reports_per_exposure !== null && reports.canary > 0 && exposures.canary >= reports.canary
      && logRateEvidence(reports.canary, exposures.canary, r.max_safety_reports_per_exposure) >= Math.log(1 / alphaPooled)) {
      return decide({ outcome: 'rollback', trigger: 'safety_limit_per_exposure',
        reason: `safety reports on ${vc} are confidently above the limit ${r.max_safety_reports_per_exposure} per exposure (${reports.canary} of ${exposures.canary} served responses)` });
    }
    return undefined;
  }

  /** Signals seen on either arm: a signal nobody reports (no ratings in this product) is not compared. */
  const observed = (): Comparison[] => comparisons.filter((c) => c.arms.canary.n + c.arms.baseline.n > 0);

  function checkStable(): ProbationDecision | undefined {
    if (counts.canary < r.min_events) return undefined;
    const seen = observed();
    if (seen.length === 0 || !seen.every((c) => c.withinMargin.rejected())) return undefined;
    return decide({ outcome: 'stable', trigger: 'margin',
      reason: `after ${counts.canary} feedback events ${vc} is confidently no worse than ${vb} within the margin on every compared signal: ${seen.map((c) => `${describe(c)} < ${c.margin}`).join('; ')}` });
  }

  return {
    observe(e) {
      if (decided !== undefined) return undefined;
      lastAt = Math.max(lastAt, e.at);
      if (e.kind === 'exposure') {
        exposures[e.arm] += e.count ?? 0;
        return undefined;
      }
      counts[e.arm]++;
      if (e.kind === 'safety_report') reports[e.arm]++;
      if (e.tenant !== null && !tenantOrder.has(e.tenant)) tenantOrder.set(e.tenant, tenantOrder.size + 1);
      for (const c of comparisons) {
        const x = harm(c.metric, e);
        if (x === undefined) continue;
        const arm = c.arms[e.arm];
        arm.n++;
        arm.sum += x;
        arm.cs?.observe(x);
        const d = c.pairing.push(e.arm, x);
        if (d !== undefined) {
          c.pairSum += d;
          const y = differenceToUnit(d);
          c.worse.observe(y);
          c.withinMargin.observe(y);
          c.difference?.observe(y);
        }
        if (alphaTenants > 0 && e.tenant !== null) {
          const tc = tenantTest(e.tenant, c.metric);
          const td = tc.pairing.push(e.arm, x);
          if (td !== undefined) tc.worse.observe(differenceToUnit(td));
        }
      }
      if (e.arm === 'canary') point(false);
      return checkRollback() ?? checkStable();
    },
    expire(now) {
      if (decided !== undefined || now - o.startedAt < r.max_hours * 3_600_000) return undefined;
      lastAt = Math.max(lastAt, now);
      const hours = `${r.max_hours} h`;
      const seen = observed();
      const howTo = `a person decides: \`alignd approve MODEL ${vc}\` keeps it, \`alignd rollback MODEL ${vb}\` rolls back`;
      if (r.on_timeout === 'hold') {
        return decide({ outcome: 'hold', trigger: 'timeout', reason: `${hours} on probation without a decision (on_timeout: hold); ${howTo}` });
      }
      const problems: string[] = [];
      if (counts.canary < r.min_events) problems.push(`only ${counts.canary} of min_events ${r.min_events} feedback events on ${vc}`);
      if (seen.length === 0) problems.push('no compared signal was observed');
      for (const c of seen) {
        const d = differenceOf(c);
        if (d.estimate === null) problems.push(`${c.metric}: no pairs of ${vc} and ${vb} observations`);
        else if (d.estimate > c.margin) problems.push(`${describe(c)} (estimated worse than the margin ${c.margin})`);
      }
      const limit = r.max_safety_report_rate;
      if (limit !== null && counts.canary > 0 && reports.canary / counts.canary > limit) problems.push(`safety reports ${fmt(reports.canary / counts.canary)} per feedback event, over the limit ${limit}`);
      if (problems.length === 0) {
        return decide({ outcome: 'stable', trigger: 'timeout',
          reason: `${hours} on probation without a confident decision; every estimated difference from ${vb} is within its margin, so stable (on_timeout: stable_if_not_worse): ${seen.map(describe).join('; ')}` });
      }
      return decide({ outcome: 'hold', trigger: 'timeout', reason: `${hours} on probation without a decision and not stable: ${problems.join('; ')}; ${howTo}` });
    },
    decision: () => decided,
    figures() {
      return {
        versions: o.versions, canaryEvents: counts.canary, baselineEvents: counts.baseline,
        exposures: { ...exposures }, safetyReports: { ...reports },
        alpha: { total: alpha, perPooledTest: alphaPooled, tenants: alphaTenants },
        tenantsCompared: tenantOrder.size,
        metrics: comparisons.map((c) => ({
          metric: c.metric, margin: c.margin, pairs: c.pairing.pairs(),
          canary: estimateOf(c.arms.canary), baseline: estimateOf(c.arms.baseline), difference: differenceOf(c),
          worse: { logEvidence: c.worse.logCapital(), threshold: Math.log(1 / c.worse.alpha), rejected: c.worse.rejected() },
          withinMargin: { logEvidence: c.withinMargin.logCapital(), threshold: Math.log(1 / c.withinMargin.alpha), rejected: c.withinMargin.rejected() },
        })),
      };
    },
    timeline: () => timeline.slice(),
  };
}
