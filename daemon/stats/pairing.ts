/**
 * Two streams — the canary's observations and the baseline's — turned into one stream of
 * differences D = x_canary − x_baseline ∈ [−1, 1], so that one bounded-mean test or confidence
 * sequence (./confidence-sequence.ts) compares the two versions directly.
 *
 * Rule: an arriving observation pairs with the MOST RECENT unpaired observation of the other arm;
 * with none waiting it waits itself (at most `maxWaiting` per arm, the oldest dropped first). The
 * rule reads arrival order only, never values, so when each arm's observations are independent
 * draws with means μ_c and μ_b, every difference has conditional mean μ_c − μ_b given the pairs
 * before it — what the betting tests need. Pairing with the most recent partner keeps the two
 * halves of a pair close in time when both versions serve concurrently (a staged rollout), which
 * cancels slow drift in the user mix; when they do not (a full cutover), the baseline is the
 * previous version's last window and the comparison assumes that mix is stationary.
 * Only paired observations count: the busier arm's surplus waits or is dropped.
 */
export type Arm = 'canary' | 'baseline';

export interface Pairing {
  /** Add an observation in [0, 1]; returns D when it completed a pair. */
  push(arm: Arm, x: number): number | undefined;
  pairs(): number;
  waiting(arm: Arm): number;
}

export function arrivalPairing(maxWaiting = 10_000): Pairing {
  const queues: Record<Arm, number[]> = { canary: [], baseline: [] };
  let pairs = 0;
  return {
    push(arm, x) {
      if (!(x >= 0 && x <= 1)) throw new RangeError(`an observation must lie in [0, 1], got ${x}`);
      const other = queues[arm === 'canary' ? 'baseline' : 'canary'];
      const partner = other.pop();
      if (partner === undefined) {
        const own = queues[arm];
        own.push(x);
        if (own.length > maxWaiting) own.shift();
        return undefined;
      }
      pairs++;
      return arm === 'canary' ? x - partner : partner - x;
    },
    pairs: () => pairs,
    waiting: (arm) => queues[arm].length,
  };
}

/** A difference D ∈ [−1, 1] on the unit interval the betting tests work on: y = (1 + D) / 2. */
export const differenceToUnit = (d: number): number => (1 + d) / 2;
/** The inverse: a bound on y back to a bound on the difference. */
export const unitToDifference = (y: number): number => 2 * y - 1;
