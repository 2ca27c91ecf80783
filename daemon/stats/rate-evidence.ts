/**
 * Evidence that a Bernoulli rate exceeds a limit p0, from counts alone: k events among n trials
 * (safety reports among feedback events, or among exposures when the serving side reports them).
 *
 * For one alternative p > p0 the likelihood ratio (p/p0)^k ((1−p)/(1−p0))^(n−k) is a nonnegative
 * supermartingale under every rate ≤ p0 (each trial multiplies it by a factor of expectation
 * q·p/p0 + (1−q)(1−p)/(1−p0) ≤ 1 for q ≤ p0), and so is an equal-weight mixture of such ratios
 * (Robbins 1970, mixtures of likelihood ratios; Ramdas, Grünwald, Vovk & Shafer 2023, Statistical
 * Science 38, "Game-theoretic statistics and safe anytime-valid inference"). By Ville's inequality
 * the mixture reaches 1/α with probability ≤ α under H0: rate ≤ p0, however often it is read.
 * It depends on (k, n) only, not on the order of trials, which counts reported in batches need.
 *
 * The alternatives sit at log-odds steps above p0 (1/8 … 4), so they fit a limit of 0.001 as well
 * as one of 0.3: a small excess is found slowly, a large one within a few dozen trials.
 */
const LOG_ODDS_STEPS = [0.125, 0.25, 0.5, 1, 2, 4];

const logit = (p: number): number => Math.log(p / (1 - p));
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** log of the mixture e-value against H0: rate ≤ p0, after k events in n trials. */
export function logRateEvidence(k: number, n: number, p0: number): number {
  if (!(p0 > 0 && p0 < 1)) throw new RangeError(`the limit p0 must lie in (0, 1), got ${p0}`);
  if (!(Number.isInteger(k) && Number.isInteger(n) && k >= 0 && n >= k)) throw new RangeError(`need integers 0 ≤ k ≤ n, got k=${k}, n=${n}`);
  const logs = LOG_ODDS_STEPS.map((d) => {
    const p = sigmoid(logit(p0) + d);
    return k * Math.log(p / p0) + (n - k) * Math.log((1 - p) / (1 - p0));
  });
  const top = Math.max(...logs);
  return top + Math.log(logs.reduce((s, l) => s + Math.exp(l - top), 0) / logs.length);
}

/** Is the rate confidently above p0 (level α, valid under continuous monitoring)? */
export function rateExceeds(k: number, n: number, p0: number, alpha: number): boolean {
  if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must lie in (0, 1), got ${alpha}`);
  return logRateEvidence(k, n, p0) >= Math.log(1 / alpha);
}
