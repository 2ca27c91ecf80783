/**
 * Anytime-valid inference on the mean of observations bounded in [0, 1], by betting
 * (Waudby-Smith & Ramdas 2024, "Estimating means of bounded random variables by betting",
 * JRSS-B 86(1)). Valid while watched continuously: the guarantees hold simultaneously at every
 * sample size, so a decision may be taken the moment a bound crosses a limit.
 *
 * To test H0: μ ≤ m, a gambler starts with capital 1 and bets on each x_i with a stake λ_i chosen
 * before seeing it:  K_t(m) = Π_{i ≤ t} (1 + λ_i (x_i − m)),  λ_i ∈ [0, c/m].
 * Under H0 every factor has expectation ≤ 1, so K is a nonnegative supermartingale and, by Ville's
 * inequality, P(∃t: K_t(m) ≥ 1/α) ≤ α. Rejecting when K reaches 1/α is therefore a level-α test
 * at whatever moment it happens, and the m's not rejected form a confidence sequence.
 * (H0: μ ≥ m bets the other way: factors 1 + λ_i (m − x_i), λ_i ∈ [0, c/(1 − m)].)
 *
 * Stakes: aGRAPA (op. cit., §5.3), λ = (μ̂ − m) / (σ̂² + (μ̂ − m)²), the Kelly bet against the
 * plug-in alternative, truncated at c = 1/2 of the largest stake that keeps capital positive.
 * μ̂ and σ̂² are the paper's regularised predictable estimates:
 *   μ̂_t = (1/2 + Σ_{i≤t} x_i) / (t + 1),   σ̂²_t = (1/4 + Σ_{i≤t} (x_i − μ̂_i)²) / (t + 1).
 */

/** Which alternative a test collects evidence for: the mean is above m, or below it. */
export type Side = 'above' | 'below';

/** The predictable plug-in estimates the stakes use (shared by every test on the same stream). */
export interface Moments {
  t: number;
  sum: number;
  squares: number;
  /** μ̂_t: the mean estimate the next stake uses. */
  mean: number;
  /** σ̂²_t. */
  variance: number;
}

export function emptyMoments(): Moments {
  return { t: 0, sum: 0, squares: 0, mean: 0.5, variance: 0.25 };
}

/** Add x_{t+1} to the estimates (after the stakes on it were settled). */
export function addObservation(s: Moments, x: number): void {
  s.t++;
  s.sum += x;
  s.mean = (0.5 + s.sum) / (s.t + 1);
  s.squares += (x - s.mean) ** 2;
  s.variance = (0.25 + s.squares) / (s.t + 1);
}

/** Share of the largest capital-preserving stake that is ever bet (the paper's c). */
export const STAKE_TRUNCATION = 0.5;

/** The aGRAPA stake on the next observation for testing `m` on `side`, from the estimates so far. */
export function agrapaStake(s: Moments, m: number, side: Side): number {
  const edge = side === 'above' ? s.mean - m : m - s.mean;
  if (edge <= 0) return 0;
  const kelly = edge / (s.variance + edge * edge);
  const room = side === 'above' ? m : 1 - m;
  // At m = 0 (above) or m = 1 (below) any stake keeps capital positive; the cap keeps it finite.
  return Math.min(kelly, room > 0 ? STAKE_TRUNCATION / room : 1e6);
}

/** log of one capital factor for observation x. */
export function capitalFactorLog(x: number, m: number, side: Side, stake: number): number {
  return Math.log1p(stake * (side === 'above' ? x - m : m - x));
}

function checkUnit(x: number, what: string): void {
  if (!(x >= 0 && x <= 1)) throw new RangeError(`${what} must lie in [0, 1], got ${x}`);
}

function checkAlpha(alpha: number): void {
  if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must lie in (0, 1), got ${alpha}`);
}

/**
 * A sequential test of H0: μ ≤ m (side `above`) or H0: μ ≥ m (side `below`) at level α. Once it
 * rejects it stays rejected: the guarantee covers the whole path, so there is nothing to undo.
 */
export interface SequentialMeanTest {
  readonly m: number;
  readonly side: Side;
  readonly alpha: number;
  /** Feed the next observation, in [0, 1]. */
  observe(x: number): void;
  /** Observations so far. */
  n(): number;
  /** log K_t(m), the evidence against H0 so far. */
  logCapital(): number;
  /** The largest log capital reached (what crossed log(1/α) when it rejected). */
  maxLogCapital(): number;
  rejected(): boolean;
  /** Observations seen when it rejected (undefined while it has not). */
  rejectedAt(): number | undefined;
}

export function sequentialMeanTest(m: number, side: Side, alpha: number): SequentialMeanTest {
  checkUnit(m, 'the tested mean m');
  checkAlpha(alpha);
  const threshold = Math.log(1 / alpha);
  const moments = emptyMoments();
  let logK = 0;
  let maxLogK = 0;
  let at: number | undefined;
  return {
    m, side, alpha,
    observe(x) {
      checkUnit(x, 'an observation');
      logK += capitalFactorLog(x, m, side, agrapaStake(moments, m, side));
      addObservation(moments, x);
      if (logK > maxLogK) maxLogK = logK;
      if (at === undefined && logK >= threshold) at = moments.t;
    },
    n: () => moments.t,
    logCapital: () => logK,
    maxLogCapital: () => maxLogK,
    rejected: () => at !== undefined,
    rejectedAt: () => at,
  };
}

export interface Bounds {
  /** Observations so far. */
  n: number;
  /** The plain mean of the observations (NaN before the first). */
  estimate: number;
  lower: number;
  upper: number;
}

/**
 * A confidence sequence for μ on a grid of candidate means: every grid point carries one test per
 * side, and a point is out of the sequence once either side has rejected it (the running
 * intersection — valid, since the guarantee is for the whole path). The lower bound comes from the
 * `above` tests at `alphaLower`, the upper from the `below` tests at `alphaUpper`, so
 * P(∃t: μ < lower_t) ≤ alphaLower and P(∃t: μ > upper_t) ≤ alphaUpper (a two-sided sequence at α:
 * α/2 each). Reported bounds are widened by one grid step, so they hold when μ falls between points.
 */
export interface ConfidenceSequence {
  observe(x: number): void;
  bounds(): Bounds;
}

export function bettingConfidenceSequence(alpha: { alphaLower: number; alphaUpper: number } | number, gridPoints = 101): ConfidenceSequence {
  const { alphaLower, alphaUpper } = typeof alpha === 'number' ? { alphaLower: alpha / 2, alphaUpper: alpha / 2 } : alpha;
  checkAlpha(alphaLower);
  checkAlpha(alphaUpper);
  if (!(Number.isInteger(gridPoints) && gridPoints >= 3)) throw new RangeError(`gridPoints must be an integer ≥ 3, got ${gridPoints}`);
  const step = 1 / (gridPoints - 1);
  const grid = Float64Array.from({ length: gridPoints }, (_, i) => i * step);
  const logAbove = new Float64Array(gridPoints);
  const logBelow = new Float64Array(gridPoints);
  const out = new Uint8Array(gridPoints);
  const thresholdAbove = Math.log(1 / alphaLower);
  const thresholdBelow = Math.log(1 / alphaUpper);
  const moments = emptyMoments();
  return {
    observe(x) {
      checkUnit(x, 'an observation');
      for (let i = 0; i < gridPoints; i++) {
        if (out[i] === 1) continue;
        const m = grid[i] as number;
        logAbove[i] = (logAbove[i] as number) + capitalFactorLog(x, m, 'above', agrapaStake(moments, m, 'above'));
        logBelow[i] = (logBelow[i] as number) + capitalFactorLog(x, m, 'below', agrapaStake(moments, m, 'below'));
        if ((logAbove[i] as number) >= thresholdAbove || (logBelow[i] as number) >= thresholdBelow) out[i] = 1;
      }
      addObservation(moments, x);
    },
    bounds() {
      let first = -1;
      let last = -1;
      for (let i = 0; i < gridPoints; i++) {
        if (out[i] === 1) continue;
        if (first < 0) first = i;
        last = i;
      }
      const estimate = moments.t === 0 ? NaN : moments.sum / moments.t;
      // Every point rejected happens with probability ≤ α; report the estimate then.
      if (first < 0) return { n: moments.t, estimate, lower: estimate, upper: estimate };
      return { n: moments.t, estimate, lower: Math.max(0, (first - 1) * step), upper: Math.min(1, (last + 1) * step) };
    },
  };
}
