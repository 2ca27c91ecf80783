/**
 * Validity over an unbounded sequence of rounds: the online fallback procedure (Tian & Ramdas
 * 2021, "Online control of the familywise error rate", Statistical Methods in Medical Research
 * 30(4)). Round k (counting the gated candidates since the anchor was set) tests at
 *
 *   α_k = γ_k·α + (the previous round's test rejected its null ? α_{k−1} : 0),
 *
 * with γ_k ≥ 0 and Σγ_k ≤ 1. The probability of ever rejecting a true null — here: ever passing a
 * candidate that is not better than what it is compared with — stays ≤ α over every k, under
 * arbitrary dependence between the rounds' tests, and no test is weaker than under plain alpha
 * spending (α_k = γ_k·α, the Bonferroni bound over rounds) because a rejection passes its level on.
 * Within a round every check runs at α_k and promotion needs all of them: an intersection–union
 * test (Berger 1982), so no correction across checks.
 */

/** γ_k = 1/(k(k+1)): sums to exactly 1 (telescoping), γ₁ = 1/2, γ₁₀ = 1/110, γ₂₀ = 1/420. */
export function gamma(k: number): number {
  if (!(Number.isInteger(k) && k >= 1)) throw new RangeError(`gamma: round index ${k} must be an integer ≥ 1`);
  return 1 / (k * (k + 1));
}

/** One round's entry in the ledger (persisted with the decision). */
export interface FallbackEntry {
  /** 1 for the first gated candidate since the anchor was set. */
  k: number;
  /** The level this round's checks ran at. */
  alpha: number;
  /** The part of alpha carried from the previous round (its test rejected its null). */
  carried: number;
  /** Whether this round's test rejected its null (every check passed). */
  rejected: boolean;
}

/** The level of the next round, given the overall α and the last round's entry (null: the first since the anchor). */
export function nextLevel(alpha: number, previous: FallbackEntry | null): Omit<FallbackEntry, 'rejected'> {
  if (!(alpha > 0 && alpha < 1)) throw new RangeError(`nextLevel: alpha ${alpha} must be in (0, 1)`);
  const k = previous === null ? 1 : previous.k + 1;
  const carried = previous !== null && previous.rejected ? previous.alpha : 0;
  return { k, alpha: gamma(k) * alpha + carried, carried };
}

/** α = 1 − confidence, without the binary rounding of the subtraction (1 − 0.95 is 0.050000000000000044). */
export const alphaOf = (confidence: number): number => Number((1 - confidence).toPrecision(12));
