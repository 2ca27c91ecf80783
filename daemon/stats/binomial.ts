/**
 * Bounds on binomial proportions (unsafe, refusal and accuracy rates) and on the difference of
 * two paired proportions. Every bound is one-sided at confidence 1 − α.
 *
 * - Clopper–Pearson (Clopper & Pearson 1934): exact, coverage ≥ 1 − α at every n and p. The upper
 *   bound p solves P(X ≤ k; n, p) = α, found by bisection on the binomial CDF. The gate's default.
 * - Wilson score (Wilson 1927): kept for comparison; its one-sided miss rate is 6.5–7.8% at
 *   n = 20–100 for a nominal 5%, so the gate does not rely on it by default.
 * - Paired difference (candidate and reference answer the same probes; Agresti, *Categorical Data
 *   Analysis*, 3rd ed., §11.1 — McNemar): see pairedDifferenceUpper.
 */
import { normalQuantile } from './normal.js';
import { logGamma } from './special.js';

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

/** P(X ≤ k) for X ~ Binomial(n, p): the terms are summed from the mode outwards in log space. */
export function binomialCdf(k: number, n: number, p: number): number {
  if (k < 0) return 0;
  if (k >= n) return 1;
  if (p <= 0) return 1;
  if (p >= 1) return 0;
  const lp = Math.log(p), lq = Math.log1p(-p), lnf = logGamma(n + 1);
  const logPmf = (i: number): number => lnf - logGamma(i + 1) - logGamma(n - i + 1) + i * lp + (n - i) * lq;
  // Sum ratios from the largest term included (index min(k, mode)) so nothing underflows early.
  const top = Math.min(k, Math.floor((n + 1) * p));
  const lTop = logPmf(top);
  const qp = Math.exp(lq - lp), pq = Math.exp(lp - lq);
  let s = 1, term = 1;
  for (let i = top; i > 0; i--) {
    term *= (i / (n - i + 1)) * qp; // pmf(i−1)/pmf(i)
    s += term;
    if (term < 1e-17 * s) break;
  }
  term = 1;
  for (let i = top; i < k; i++) {
    term *= ((n - i) / (i + 1)) * pq; // pmf(i+1)/pmf(i)
    s += term;
  }
  return Math.min(1, Math.exp(lTop + Math.log(s)));
}

function bisect(f: (p: number) => number): number {
  // f decreasing in p with f(0) > 0 > f(1): its root to 2^-60.
  let lo = 0, hi = 1;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (f(mid) > 0) lo = mid; else hi = mid;
  }
  return (lo + hi) / 2;
}

/** One-sided Clopper–Pearson bounds for k successes in n trials, each at confidence `confidence`. */
export function clopperPearson(k: number, n: number, confidence: number): Interval {
  if (n === 0) return { lower: 0, upper: 1 };
  const alpha = 1 - confidence;
  // upper: P(X ≤ k; p) decreases in p; the p where it equals α.
  const upper = k >= n ? 1 : k === 0 ? 1 - alpha ** (1 / n) : bisect((p) => binomialCdf(k, n, p) - alpha);
  // lower: P(X ≥ k; p) = 1 − P(X ≤ k − 1; p) increases in p; the p where it equals α.
  const lower = k <= 0 ? 0 : k === n ? alpha ** (1 / n) : bisect((p) => alpha - (1 - binomialCdf(k - 1, n, p)));
  return { lower, upper };
}

export interface PairedCounts {
  /** Probes both answered. */
  n: number;
  /** Probes where only the candidate's answer is positive (e.g. unsafe only for the candidate). */
  candidateOnly: number;
  /** Probes where only the reference's answer is positive. */
  referenceOnly: number;
}

export interface PairedBound {
  /** Point estimate of p_candidate − p_reference: (candidateOnly − referenceOnly)/n. */
  estimate: number;
  /** Upper bound of the difference at the stated confidence. */
  upper: number;
  /** Discordant probes (only discordant pairs carry information about the difference). */
  discordant: number;
}

/**
 * Exact upper bound on the difference of two paired proportions, p_c − p_r, from the discordant
 * probes (McNemar's setting, Agresti §11.1). With q = P(discordant) and π = P(candidate-positive |
 * discordant), the difference is Δ = q·(2π − 1). The number of discordant probes m is
 * Binomial(n, q); given m, candidateOnly is Binomial(m, π) — an exact conditional binomial, as in
 * McNemar's exact test. Clopper–Pearson upper bounds q_U and π_U at level α' = 1 − √(1 − α) each
 * hold jointly with probability ≥ (1 − α')² = 1 − α (the second holds with probability ≥ 1 − α'
 * conditionally on m), and on that event Δ ≤ q_U·max(0, 2π_U − 1). Conservative (the two bounds
 * are combined by their product, not optimised jointly), valid at every n, and it needs no
 * variance estimate, so it holds with no discordant probes at all (then the bound is q_U, the most
 * the versions can differ on n probes that all agreed).
 *
 * Passing when `upper ≤ δ` is a non-inferiority test of H0: Δ > δ at level α (under H0,
 * upper ≤ δ < Δ happens with probability ≤ α); δ is the policy's margin.
 */
export function pairedDifferenceUpper(c: PairedCounts, confidence: number): PairedBound {
  const { n, candidateOnly: b, referenceOnly: r } = c;
  const m = b + r;
  if (n === 0) return { estimate: NaN, upper: 1, discordant: 0 };
  if (!(b >= 0 && r >= 0 && m <= n)) throw new RangeError(`pairedDifferenceUpper: counts ${b} + ${r} exceed ${n} probes`);
  const each = Math.sqrt(confidence); // (1 − α') = √(1 − α)
  const qU = clopperPearson(m, n, each).upper;
  const piU = m === 0 ? 1 : clopperPearson(b, m, each).upper;
  return { estimate: (b - r) / n, upper: Math.min(1, qU * Math.max(0, 2 * piU - 1)), discordant: m };
}
