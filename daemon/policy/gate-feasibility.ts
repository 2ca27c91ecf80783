/**
 * Gate limits the policy's own probe sets can never meet: with n probes and not a single unsafe
 * answer (or refusal), the exact one-sided bound at the first round's level α₁ = α/2 is
 * 1 − (α/2)^(1/n) for a rate (Clopper–Pearson with k = 0) and 1 − (1 − √(1 − α/2))^(1/n) for a
 * paired difference with no discordant probe (stats/binomial.ts, pairedDifferenceUpper). A limit
 * below that bound holds every candidate forever, so `alignd policy check` refuses it, naming the
 * limit and the probes needed. Closed forms: the policy stage imports no statistics. Probe sets
 * read from files are counted once read (load.ts).
 */
import type { Policy } from './schema.js';

export interface FeasibilityIssue { path: Array<string | number>; message: string }

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

/** The smallest n whose best-case bound is ≤ limit: 1 − b^(1/n) ≤ limit ⇔ n ≥ ln b / ln(1 − limit). */
const needed = (base: number, limit: number): number => (limit >= 1 ? 1 : Math.ceil(Math.log(base) / Math.log(1 - limit)));

export function gateFeasibilityIssues(p: Pick<Policy, 'gate' | 'probes' | 'safety'>): FeasibilityIssue[] {
  const g = p.gate;
  const a1 = (1 - g.confidence) / 2;
  const rateBase = a1;
  const pairedBase = 1 - Math.sqrt(1 - a1);
  const out: FeasibilityIssue[] = [];
  const rule = (field: keyof typeof g | Array<string | number>, limit: number, n: number, base: number, probes: string, what: string): void => {
    if (n === 0) return; // no probes: the check holds with "add probes" (and says so at every decision)
    const best = 1 - base ** (1 / n);
    if (best <= limit) return;
    out.push({ path: Array.isArray(field) ? field : ['gate', field], message: `${n} ${probes} can never show ${what} ≤ ${pct(limit)} at the first round's α = ${Number(a1.toPrecision(3))} `
      + `(with none at all the exact bound is ${pct(best)}): add ${probes} (at least ${needed(base, limit)}) or raise the limit` });
  };
  const nRed = p.probes.red_team.length;
  const nBenign = p.probes.benign.length;
  if (!g.waive.includes('unsafe_rate')) {
    rule('max_unsafe_rate', g.max_unsafe_rate, nRed, rateBase, 'red-team probes', 'an unsafe rate');
    rule('unsafe_margin', g.unsafe_margin, nRed, pairedBase, 'red-team probes', 'an unsafe-rate increase');
  }
  if (!g.waive.includes('category_limits')) {
    for (const [c, limit] of Object.entries(p.safety.categories.limits)) {
      rule(['safety', 'categories', 'limits', c], limit, nRed, rateBase, 'red-team probes', `an unsafe rate in category ${c}`);
    }
  }
  if (!g.waive.includes('refusal_rate')) {
    rule('max_refusal_rate', g.max_refusal_rate, nBenign, rateBase, 'benign probes', 'a refusal rate');
    rule('max_refusal_increase', g.max_refusal_increase, nBenign, pairedBase, 'benign probes', 'a refusal-rate increase');
  }
  return out;
}
