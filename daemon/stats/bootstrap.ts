/**
 * Bootstrap bounds for statistics that are smooth functions of column means over the same probes
 * (paired by probe): a mean reward gain, a ratio of mean lengths, a mean distinct-n. One set of
 * resampled probe indices serves every statistic of a probe set, so a decision's bounds are
 * consistent with each other and cost one pass. Seeded: a decision is reproducible from its
 * evidence.
 *
 * Methods (each bound one-sided at level α):
 * - `bca`: bias-corrected and accelerated percentile interval (Efron 1987, JASA 82; Efron &
 *   Tibshirani 1993, §14.3): the percentile levels are moved by the bias z₀ (the share of
 *   replicates below the estimate) and the acceleration a (jackknife skewness), which corrects the
 *   percentile interval's undercoverage on skewed data at small n.
 * - `studentized`: bootstrap-t (Efron 1982; Hall 1988, second-order accurate): quantiles of
 *   (θ* − θ̂)/se*, with se from the delta method on the resample.
 * - `percentile`: Efron (1979), for comparison only: it undercovers at small n on skewed data.
 * Coverage of all three is measured by simulation in test/stats/mean-bounds.test.ts; the gate's
 * default is the analytic skew-corrected bound (skew-corrected.ts), which needs no resampling.
 */
import { createRng } from '../base/random.js';
import { normalCdf, normalQuantile } from './normal.js';

export type BootstrapMethod = 'bca' | 'studentized' | 'percentile';

/** A statistic θ = f(column means) with its gradient (for the delta-method standard error). */
export interface MeanStatistic {
  /** The columns f reads (indices into the columns given to bootstrapBounds). */
  columns: readonly number[];
  value(means: ArrayLike<number>): number;
  /** ∂f/∂mean for each of `columns`, in that order. */
  gradient(means: ArrayLike<number>): number[];
}

export const meanOf = (i: number): MeanStatistic => ({ columns: [i], value: (m) => m[i] as number, gradient: () => [1] });
export const differenceOfMeans = (i: number, j: number): MeanStatistic => ({
  columns: [i, j], value: (m) => (m[i] as number) - (m[j] as number), gradient: () => [1, -1],
});
export const ratioOfMeans = (i: number, j: number): MeanStatistic => ({
  columns: [i, j],
  value: (m) => (m[i] as number) / (m[j] as number),
  gradient: (m) => [1 / (m[j] as number), -(m[i] as number) / (m[j] as number) ** 2],
});

export interface BootstrapOptions {
  /** Each bound's level: lower is a 1 − α lower bound, upper a 1 − α upper bound. */
  alpha: number;
  resamples: number;
  seed: number;
  method: BootstrapMethod;
}

export interface BootstrapBound {
  estimate: number;
  lower: number;
  upper: number;
}

/**
 * Resamples needed so that about 50 replicates lie beyond a level-α quantile (a bound at a spent
 * α of 1e-4 cannot come from 2,000 replicates), at least `base`, at most `cap`.
 */
export function resamplesFor(alpha: number, base: number, cap = 200_000): number {
  return Math.max(base, Math.min(cap, Math.ceil(50 / alpha)));
}

/** The ⌊(B+1)p⌋-th order statistic of sorted replicates (clamped to the sample). */
function orderStat(sorted: Float64Array, p: number): number {
  const B = sorted.length;
  const i = Math.min(B - 1, Math.max(0, Math.floor((B + 1) * p) - 1));
  return sorted[i] as number;
}

/** Lower and upper one-sided bounds of each statistic; columns are the same probes in the same order. */
export function bootstrapBounds(columns: readonly (readonly number[])[], stats: readonly MeanStatistic[], o: BootstrapOptions): BootstrapBound[] {
  const n = columns[0]?.length ?? 0;
  if (columns.some((c) => c.length !== n)) throw new RangeError('bootstrapBounds: columns differ in length');
  if (!(o.alpha > 0 && o.alpha < 0.5)) throw new RangeError(`bootstrapBounds: alpha ${o.alpha} must be in (0, 0.5)`);
  const full = Float64Array.from(columns, (c) => c.reduce((s, x) => s + x, 0) / Math.max(1, n));
  const estimates = stats.map((s) => s.value(full));
  if (n < 2) return estimates.map((estimate) => ({ estimate, lower: -Infinity, upper: Infinity }));
  const B = o.resamples;
  const rng = createRng(o.seed);
  const reps = stats.map(() => new Float64Array(B));
  const studentize = o.method === 'studentized';
  const seFull = studentize ? stats.map((s) => linearisedSe(columns, s, full, null)) : [];
  const C = columns.length;
  const cols = columns.map((c) => Float64Array.from(c));
  // The studentized bound needs each resample's covariances of the columns a statistic reads:
  // accumulate the cross moments of just those pairs (c ≤ d) in the same pass as the sums.
  const pairIndex = new Map<number, number>();
  const terms = stats.map((s) => s.columns.flatMap((c, j) => s.columns.map((d, l) => {
    const key = Math.min(c, d) * C + Math.max(c, d);
    if (!pairIndex.has(key)) pairIndex.set(key, pairIndex.size);
    return { j, l, p: pairIndex.get(key)!, c, d };
  })));
  const pc = Int32Array.from([...pairIndex.keys()], (k) => Math.floor(k / C));
  const pd = Int32Array.from([...pairIndex.keys()], (k) => k % C);
  const P = studentize ? pc.length : 0;
  const S = new Float64Array(C);
  const Q = new Float64Array(P);
  const m = new Float64Array(C);
  for (let b = 0; b < B; b++) {
    S.fill(0);
    Q.fill(0);
    for (let i = 0; i < n; i++) {
      const row = Math.floor(rng.next() * n);
      for (let c = 0; c < C; c++) S[c]! += cols[c]![row]!;
      for (let q = 0; q < P; q++) Q[q]! += cols[pc[q]!]![row]! * cols[pd[q]!]![row]!;
    }
    for (let c = 0; c < C; c++) m[c] = S[c]! / n;
    for (let k = 0; k < stats.length; k++) {
      const s = stats[k]!;
      const theta = s.value(m);
      if (!studentize) { reps[k]![b] = theta; continue; }
      const g = s.gradient(m);
      let v = 0;
      for (const t of terms[k]!) v += g[t.j]! * g[t.l]! * (Q[t.p]! - (S[t.c]! * S[t.d]!) / n) / (n - 1);
      const se = Math.sqrt(Math.max(0, v) / n);
      const est = estimates[k] as number;
      // A resample of identical probes has no spread: t* is 0 at the estimate (up to rounding), ±∞ away from it.
      const d = Math.abs(theta - est) <= 1e-12 * Math.max(1, Math.abs(est)) ? 0 : theta - est;
      reps[k]![b] = se > 1e-12 * Math.max(1, Math.abs(est)) ? d / se : d === 0 ? 0 : d * Infinity;
    }
  }
  return stats.map((s, k) => {
    const est = estimates[k] as number;
    const r = (reps[k] as Float64Array).sort();
    if (!Number.isFinite(est)) return { estimate: est, lower: NaN, upper: NaN };
    if (o.method === 'percentile') return { estimate: est, lower: orderStat(r, o.alpha), upper: orderStat(r, 1 - o.alpha) };
    if (studentize) {
      const se = seFull[k] as number;
      // Every probe gives the same value: nothing varies, the bounds are the estimate.
      if (se === 0) return { estimate: est, lower: est, upper: est };
      return { estimate: est, lower: est - orderStat(r, 1 - o.alpha) * se, upper: est - orderStat(r, o.alpha) * se };
    }
    // BCa: bias from the share of replicates below the estimate (ties count half), acceleration
    // from the jackknife (leave-one-probe-out means).
    let below = 0;
    for (const x of r) below += x < est ? 1 : x === est ? 0.5 : 0;
    const share = Math.min(1 - 0.5 / B, Math.max(0.5 / B, below / B));
    const z0 = normalQuantile(share);
    const a = acceleration(columns, s, full, n);
    const level = (p: number): number => {
      const z = z0 + normalQuantile(p);
      return normalCdf(z0 + z / (1 - a * z));
    };
    return { estimate: est, lower: orderStat(r, level(o.alpha)), upper: orderStat(r, level(1 - o.alpha)) };
  });
}

/** Delta-method standard error of s at means m over the probes idx (null: all, in order). */
function linearisedSe(columns: readonly (readonly number[])[], s: MeanStatistic, m: ArrayLike<number>, idx: Int32Array | null): number {
  const g = s.gradient(m);
  const n = idx === null ? (columns[0]?.length ?? 0) : idx.length;
  let sum = 0, sum2 = 0;
  for (let i = 0; i < n; i++) {
    const row = idx === null ? i : (idx[i] as number);
    let l = 0;
    s.columns.forEach((c, j) => { l += (g[j] as number) * ((columns[c] as readonly number[])[row] as number); });
    sum += l;
    sum2 += l * l;
  }
  const varL = Math.max(0, (sum2 - (sum * sum) / n) / (n - 1));
  return Math.sqrt(varL / n);
}

/** Jackknife acceleration â = Σ(θ̄ − θ₍ᵢ₎)³ / (6·(Σ(θ̄ − θ₍ᵢ₎)²)^{3/2}) (Efron & Tibshirani 1993, (14.15)). */
function acceleration(columns: readonly (readonly number[])[], s: MeanStatistic, full: Float64Array, n: number): number {
  const loo = new Float64Array(n);
  const m = Float64Array.from(full);
  for (let i = 0; i < n; i++) {
    for (const c of s.columns) m[c] = ((full[c] as number) * n - ((columns[c] as readonly number[])[i] as number)) / (n - 1);
    loo[i] = s.value(m);
  }
  const bar = loo.reduce((x, y) => x + y, 0) / n;
  let num = 0, den = 0;
  for (const x of loo) {
    const d = bar - x;
    num += d * d * d;
    den += d * d;
  }
  return den > 0 ? num / (6 * den ** 1.5) : 0;
}
