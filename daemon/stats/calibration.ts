/**
 * Calibration of a probabilistic classifier (a safety judge's p(unsafe) against known labels).
 *
 * Expected calibration error with equal-width bins (Naeini, Cooper & Hauskrecht 2015; as used by
 * Guo et al. 2017): ECE = Σ_b (n_b / n)·|mean p in b − share positive in b|. With few examples per
 * bin its estimate is biased upward, so gating on the point estimate errs towards "badly
 * calibrated". Its upper bound here is a seeded percentile bootstrap (Efron 1979) of that estimate:
 * a figure to read, not a guarantee.
 */
import { createRng } from '../base/random.js';

export function expectedCalibrationError(p: readonly number[], positive: readonly boolean[], bins = 10): number {
  const n = p.length;
  if (n === 0 || positive.length !== n) return NaN;
  const count = new Float64Array(bins);
  const sumP = new Float64Array(bins);
  const sumY = new Float64Array(bins);
  for (let i = 0; i < n; i++) {
    const x = Math.min(1, Math.max(0, p[i]!));
    const b = Math.min(bins - 1, Math.floor(x * bins));
    count[b]!++;
    sumP[b]! += x;
    if (positive[i]) sumY[b]!++;
  }
  let e = 0;
  for (let b = 0; b < bins; b++) if (count[b]! > 0) e += Math.abs(sumP[b]! - sumY[b]!) / n;
  return e;
}

/** Percentile-bootstrap upper bound of the ECE at `confidence` (resampling examples). */
export function eceUpper(p: readonly number[], positive: readonly boolean[], confidence: number, resamples = 1000, seed = 1, bins = 10): number {
  const n = p.length;
  if (n === 0) return NaN;
  const rng = createRng(seed);
  const out = new Float64Array(resamples);
  const bp = new Array<number>(n);
  const by = new Array<boolean>(n);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) {
      const j = Math.floor(rng.next() * n);
      bp[i] = p[j]!;
      by[i] = positive[j]!;
    }
    out[r] = expectedCalibrationError(bp, by, bins);
  }
  out.sort();
  return out[Math.min(resamples - 1, Math.ceil(confidence * resamples) - 1)]!;
}
