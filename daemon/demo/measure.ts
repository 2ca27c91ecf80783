/**
 * The demo's measurement of what a run changed: the version served at the start and the one
 * served at the end answer the same prompts with the same sampling seeds, and the hidden gold rule
 * and unsafe pattern score every answer.
 *
 * - Gold gain, paired: per prompt, the mean over seeds of gold(end) − gold(start); the mean of
 *   those per-prompt differences over n prompts drawn from the demo's prompt distribution, with a
 *   two-sided 95% Student-t interval (prompts are the independent units; the seeds of one prompt
 *   are averaged first). Row b of a generation call uses seed + b on both sides, so the two
 *   versions' samples share their random draws and the difference carries less sampling noise.
 * - Unsafe rate per version: unsafe answers among all answers (demo prompts and the policy's
 *   red-team prompts, every seed) with the two-sided 95% Clopper–Pearson interval.
 */
import { clopperPearson } from '../stats/binomial.js';
import { studentQuantile } from '../stats/special.js';
import { gold, isUnsafe } from './oracle.js';

export interface MeasureOptions {
  /** Demo prompts (the gold gain's units). */
  prompts: readonly string[];
  /** Red-team prompts (unsafe rate only). */
  redTeam: readonly string[];
  /** Sampling seeds per prompt. */
  seeds: number;
  /** First seed; seed s of a chunk's row b is base + s·stride + b. */
  seedBase: number;
}

/** Generates answers of one version (the demo binds the served adapter). */
export type Answer = (prompts: readonly string[], seed: number) => Promise<string[]>;

export interface Interval95 { mean: number; lower: number; upper: number }
export interface UnsafeRate { rate: number; unsafe: number; answers: number; lower: number; upper: number }

export interface Comparison {
  prompts: number;
  seeds: number;
  goldStart: number;
  goldEnd: number;
  /** Paired gold gain (end − start) with its 95% interval. */
  goldGain: Interval95;
  unsafeStart: UnsafeRate;
  unsafeEnd: UnsafeRate;
}

/** Mean of xs with its two-sided 95% Student-t interval. */
export function meanInterval95(xs: readonly number[]): Interval95 {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, lower: -Infinity, upper: Infinity };
  const sd = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  const half = studentQuantile(0.975, n - 1) * sd / Math.sqrt(n);
  return { mean, lower: mean - half, upper: mean + half };
}

/** Unsafe count with the two-sided 95% Clopper–Pearson interval (one-sided 97.5% bounds). */
export function unsafeRate(answers: readonly string[]): UnsafeRate {
  const k = answers.filter(isUnsafe).length;
  const n = answers.length;
  const cp = clopperPearson(k, n, 0.975);
  return { rate: n === 0 ? NaN : k / n, unsafe: k, answers: n, lower: cp.lower, upper: cp.upper };
}

/** Answers of one version to every prompt under every seed: [seed][prompt]. */
async function answersOf(answer: Answer, prompts: readonly string[], o: MeasureOptions): Promise<string[][]> {
  const out: string[][] = [];
  for (let s = 0; s < o.seeds; s++) out.push(await answer(prompts, o.seedBase + s * 100_003));
  return out;
}

export async function compareVersions(start: Answer, end: Answer, o: MeasureOptions): Promise<Comparison> {
  const all = [...o.prompts, ...o.redTeam];
  const a = await answersOf(start, all, o);
  const b = await answersOf(end, all, o);
  const n = o.prompts.length;
  const perPrompt = (side: string[][]): number[] => Array.from({ length: n }, (_, i) => side.reduce((acc, seedRow) => acc + gold(seedRow[i]!), 0) / o.seeds);
  const ga = perPrompt(a);
  const gb = perPrompt(b);
  const avg = (xs: number[]): number => xs.reduce((x, y) => x + y, 0) / xs.length;
  return {
    prompts: n, seeds: o.seeds, goldStart: avg(ga), goldEnd: avg(gb), goldGain: meanInterval95(gb.map((x, i) => x - ga[i]!)),
    unsafeStart: unsafeRate(a.flat()), unsafeEnd: unsafeRate(b.flat()),
  };
}
