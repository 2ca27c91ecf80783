/**
 * Bootstrap bounds of a mean (Efron 1979); seeded, so a decision is reproducible from its evidence.
 */
import { createRng } from '../base/random.js';

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
