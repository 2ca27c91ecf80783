/**
 * The statistics the gate's bounds use. All bounds are one-sided at confidence `c`.
 *
 * - Wilson score interval (Wilson 1927) for a binomial proportion.
 * - Clopper–Pearson exact interval (Clopper & Pearson 1934), found by bisection on the binomial
 *   CDF: the upper bound p solves P(X ≤ k; n, p) = 1 − c.
 * - Percentile bootstrap (Efron 1979) of the mean of paired differences; seeded, so a decision is
 *   reproducible from its evidence.
 * - Φ⁻¹ by Acklam's rational approximation (relative error < 1.2e-9, ample for bounds).
 */
import { createRng } from '../base/random.js';

/** Inverse standard normal CDF (Acklam 2003). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile needs 0 < p < 1, got ${p}`);
  const a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
  const b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
  const c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
  const d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
  const [a0, a1, a2, a3, a4, a5] = a as [number, number, number, number, number, number];
  const [b0, b1, b2, b3, b4] = b as [number, number, number, number, number];
  const [c0, c1, c2, c3, c4, c5] = c as [number, number, number, number, number, number];
  const [d0, d1, d2, d3] = d as [number, number, number, number];
  const lo = 0.02425;
  let x: number;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    x = (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  } else if (p <= 1 - lo) {
    const q = p - 0.5;
    const r = q * q;
    x = (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q / (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x = -(((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  return x;
}

export interface Interval { lower: number; upper: number }

/** One-sided Wilson score bounds for k successes in n trials. */
export function wilson(k: number, n: number, confidence: number): Interval {
  if (n === 0) return { lower: 0, upper: 1 };
  const z = normalQuantile(confidence);
  const p = k / n;
  const den = 1 + z * z / n;
  const centre = (p + z * z / (2 * n)) / den;
  const half = (z / den) * Math.sqrt(p * (1 - p) / n + z * z / (4 * n * n));
  return { lower: Math.max(0, centre - half), upper: Math.min(1, centre + half) };
}

function logChoose(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log((n - k + i) / i);
  return s;
}

/** P(X ≤ k) for X ~ Binomial(n, p). */
export function binomialCdf(k: number, n: number, p: number): number {
  if (k >= n) return 1;
  if (p <= 0) return 1;
  if (p >= 1) return 0;
  let s = 0;
  for (let i = 0; i <= k; i++) s += Math.exp(logChoose(n, i) + i * Math.log(p) + (n - i) * Math.log1p(-p));
  return Math.min(1, s);
}

/** One-sided Clopper–Pearson bounds for k successes in n trials. */
export function clopperPearson(k: number, n: number, confidence: number): Interval {
  if (n === 0) return { lower: 0, upper: 1 };
  const alpha = 1 - confidence;
  const solve = (f: (p: number) => number): number => {
    let lo = 0, hi = 1;
    for (let i = 0; i < 100; i++) {
      const mid = (lo + hi) / 2;
      if (f(mid) > 0) lo = mid; else hi = mid;
    }
    return (lo + hi) / 2;
  };
  // upper: P(X ≤ k; p) decreases in p; find p with CDF = α.
  const upper = k >= n ? 1 : solve((p) => binomialCdf(k, n, p) - alpha);
  // lower: P(X ≥ k; p) = 1 − P(X ≤ k−1; p) increases in p; find p with it = α.
  const lower = k <= 0 ? 0 : solve((p) => alpha - (1 - binomialCdf(k - 1, n, p)));
  return { lower, upper };
}

export const mean = (xs: readonly number[]): number => (xs.length === 0 ? NaN : xs.reduce((s, x) => s + x, 0) / xs.length);

/** Percentile-bootstrap one-sided lower bound of the mean (Efron 1979). */
export function bootstrapMeanLower(xs: readonly number[], confidence: number, resamples: number, seed = 1): number {
  const n = xs.length;
  if (n === 0) return NaN;
  const rng = createRng(seed);
  const means = new Float64Array(resamples);
  for (let b = 0; b < resamples; b++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += xs[Math.floor(rng.next() * n)] as number;
    means[b] = s / n;
  }
  means.sort();
  const idx = Math.min(resamples - 1, Math.max(0, Math.floor((1 - confidence) * resamples)));
  return means[idx] as number;
}
