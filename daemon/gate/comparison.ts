/**
 * One bounded comparison and the status it gives, the same rule for every check:
 * - the estimate itself on the wrong side of the limit → fail (the evidence points the wrong way);
 * - only the bound on the wrong side → inconclusive (not enough evidence to be sure: hold);
 * - the bound on the right side → pass (shown at the check's confidence).
 * `holdOnly` comparisons (the share of uncertain verdicts, say) never fail, only hold.
 */
import type { CheckResult, CheckStatus, Comparison } from './evidence.js';

export const r4 = (x: number): number => (Number.isFinite(x) ? Math.round(x * 1e4) / 1e4 : x);
export const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : String(x));
const num = (x: number): string => (Number.isFinite(x) ? String(r4(x)) : String(x));

export interface ComparisonInput {
  statistic: string;
  against: Comparison['against'];
  estimate: number;
  side: Comparison['side'];
  bound: number;
  limit: number;
  strict?: boolean;
  holdOnly?: boolean;
  counts: Record<string, number>;
  /** A rate (shown as a percentage) or a plain number (the default). */
  unit?: 'rate' | 'number';
}

function wrongSide(x: number, c: ComparisonInput): boolean {
  if (Number.isNaN(x)) return true;
  if (c.side === 'upper') return x > c.limit;
  return c.strict === true ? !(x > c.limit) : x < c.limit;
}

export function compare(c: ComparisonInput): Comparison {
  const status: CheckStatus = wrongSide(c.estimate, c) ? (c.holdOnly === true ? 'inconclusive' : 'fail')
    : wrongSide(c.bound, c) ? 'inconclusive' : 'pass';
  return {
    statistic: c.statistic, against: c.against, estimate: r4(c.estimate), side: c.side, bound: r4(c.bound), limit: c.limit,
    ...(c.strict === true ? { strict: true } : {}), status, unit: c.unit ?? 'number', counts: c.counts,
  };
}

/** "unsafe rate − deployed +6.7% (upper bound 21.0% > 2.0%; 30 probes, 4 discordant)". */
export function describe(c: Comparison): string {
  const f = c.unit === 'rate' ? pct : num;
  const op = c.side === 'upper' ? (c.bound > c.limit ? '>' : '≤') : c.strict === true ? (c.bound > c.limit ? '>' : '≤') : (c.bound < c.limit ? '<' : '≥');
  const counts = Object.entries(c.counts).map(([k, v]) => `${v} ${k}`).join(', ');
  const est = c.estimate > 0 && c.statistic.includes('−') ? `+${f(c.estimate)}` : f(c.estimate);
  return `${c.statistic} ${est} (${c.side} bound ${f(c.bound)} ${op} ${f(c.limit)}${counts === '' ? '' : `; ${counts}`})`;
}

export const worst = (xs: readonly CheckStatus[]): CheckStatus => (xs.includes('fail') ? 'fail' : xs.includes('inconclusive') ? 'inconclusive' : 'pass');

/**
 * A check from its comparisons: its status is the worst of theirs; its reason names every
 * comparison that did not pass (or, when all passed, every comparison), then `note` when given.
 */
export function checkFrom(check: string, alpha: number | null, comparisons: Comparison[], figures: CheckResult['figures'],
  o: { failNote?: string; prefix?: string } = {}): CheckResult {
  const status = worst(comparisons.map((c) => c.status));
  const shown = status === 'pass' ? comparisons : comparisons.filter((c) => c.status !== 'pass');
  const text = shown.map(describe).join('; ');
  const tail = status === 'fail' && o.failNote !== undefined ? `: ${o.failNote}` : status === 'inconclusive' ? ': not shown at this confidence, more probes would tell' : '';
  const level = alpha === null ? '' : ` [α ${Number(alpha.toPrecision(3))}]`;
  return { check, status, reason: `${o.prefix ?? ''}${text}${tail}${level}`, alpha, comparisons, figures };
}

/** A check that could not be computed: inconclusive (or fail) with a reason, no comparisons. */
export function checkWithout(check: string, alpha: number | null, status: CheckStatus, reason: string, figures: CheckResult['figures'] = {}): CheckResult {
  return { check, status, reason, alpha, comparisons: [], figures };
}
