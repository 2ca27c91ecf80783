/**
 * Bounds on a binomial proportion (unsafe, refusal, accuracy rates). All bounds are one-sided at
 * confidence `c`.
 *
 * - Wilson score interval (Wilson 1927).
 * - Clopper–Pearson exact interval (Clopper & Pearson 1934), found by bisection on the binomial
 *   CDF: the upper bound p solves P(X ≤ k; n, p) = 1 − c.
 */
import { normalQuantile } from './normal.js';

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
