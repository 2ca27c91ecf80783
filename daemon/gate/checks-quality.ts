/**
 * The quality checks: whether the reward signal tracks anything (its held-out ranking accuracy),
 * the candidate's held-out accuracy, and on the reward probes — every side answering the same
 * prompts — the paired reward gain and the reward-hacking signatures (length, repetition), with
 * bounds of means over the same probes (stats/skew-corrected.ts, or a bootstrap from one set of
 * resampled probes, stats/bootstrap.ts).
 */
import type { GatePolicy } from '../policy/schema.js';
import { clopperPearson } from '../stats/binomial.js';
import { alphaOf } from '../stats/online-fwer.js';
import { bootstrapBounds, differenceOfMeans, meanOf, ratioOfMeans, resamplesFor, type MeanStatistic } from '../stats/bootstrap.js';
import { skewCorrectedBounds } from '../stats/skew-corrected.js';
import { checkFrom, checkWithout, compare, r4 } from './comparison.js';
import type { CheckResult, Comparison, Evidence } from './evidence.js';
import { distinctN } from './signatures.js';

/**
 * reward_signal: the scorer's ranking accuracy on held-out pairs this round. Its lower bound must
 * exceed min_signal_accuracy (chance, 0.5, by default): a scorer no better than chance cannot show
 * a gain, whatever its bootstrap says. At the gate's confidence: it qualifies the instrument.
 */
export function rewardSignal(ev: Evidence, g: GatePolicy): CheckResult {
  const s = ev.reward.signal;
  const alpha = alphaOf(g.confidence);
  if (s.heldoutPairs === 0) {
    return checkWithout('reward_signal', alpha, 'inconclusive', `the reward scorer ${s.name} was not measured on held-out pairs this round: its gains cannot be trusted (held-out preference feedback is needed)`, { scorer: s.name });
  }
  const cp = clopperPearson(s.heldoutCorrect, s.heldoutPairs, g.confidence);
  const c = compare({ statistic: `${s.name} held-out ranking accuracy`, against: 'absolute', estimate: s.heldoutCorrect / s.heldoutPairs, side: 'lower',
    bound: cp.lower, limit: g.min_signal_accuracy, strict: true, holdOnly: true, unit: 'rate', counts: { 'held-out pairs': s.heldoutPairs, 'ranked right': s.heldoutCorrect } });
  return checkFrom('reward_signal', alpha, [c], { scorer: s.name }, {
    ...(c.status === 'pass' ? {} : { prefix: 'the reward scorer is no better than chance on held-out pairs, so reward_gain cannot be trusted: ' }) });
}

/** heldout_accuracy: share of held-out feedback the candidate's implicit reward agrees with; its lower bound must exceed the minimum. */
export function heldoutAccuracy(ev: Evidence, g: GatePolicy, alpha: number): CheckResult {
  const { kind, margins } = ev.heldout;
  const n = margins.length;
  const what = kind === 'pairs' ? 'held-out pairs' : 'held-out up/down labels';
  if (n === 0 || n < g.min_heldout_pairs) return checkWithout('heldout_accuracy', alpha, 'inconclusive', `only ${n} ${what} (need ${g.min_heldout_pairs})`, { kind, n });
  const k = margins.filter((m) => m > 0).length;
  const c = compare({ statistic: `implicit-reward accuracy on ${what}`, against: 'absolute', estimate: k / n, side: 'lower', bound: clopperPearson(k, n, 1 - alpha).lower,
    limit: g.min_heldout_accuracy, strict: true, unit: 'rate', counts: { [what]: n, agreeing: k } });
  return checkFrom('heldout_accuracy', alpha, [c], { kind }, { failNote: 'the candidate does not rank held-out feedback better than the minimum' });
}

/**
 * reward_gain, length_ratio and repetition over the reward probes. Columns per side: reward
 * score, answer tokens, distinct-n; statistics: mean paired gain, ratio of mean lengths, mean
 * distinct-n and its ratio — against the deployed version and the anchor.
 */
export function probeChecks(ev: Evidence, g: GatePolicy, alpha: number, seed: number): CheckResult[] {
  const r = ev.reward;
  const n = r.prompts.length;
  const sides = (['candidate', 'deployed', 'anchor'] as const).filter((s) => r.answers[s] !== undefined && r.scores[s] !== undefined);
  const refs = sides.filter((s) => s !== 'candidate') as Array<'deployed' | 'anchor'>;
  if (n < g.min_probes) {
    const reason = `only ${n} reward probes (need gate.min_probes = ${g.min_probes}): add benign probes or wait for held-out production prompts`;
    return ['reward_gain', 'length_ratio', 'repetition'].map((c) => checkWithout(c, alpha, 'inconclusive', reason, { probes: n }));
  }
  const col = (f: (side: typeof sides[number], i: number) => number): number[][] => sides.map((s) => Array.from({ length: n }, (_, i) => f(s, i)));
  const scores = col((s, i) => r.scores[s]![i]?.mean ?? NaN);
  const tokens = col((s, i) => r.answers[s]![i]?.tokens ?? NaN);
  const distinct = col((s, i) => distinctN(r.answers[s]![i]?.text ?? '', g.distinct_n));
  const S = sides.length;
  const at = (base: number, side: typeof sides[number]): number => base * S + sides.indexOf(side);
  const columns = [...scores, ...tokens, ...distinct];
  const stats: Array<{ key: string; stat: MeanStatistic }> = [
    ...refs.map((ref) => ({ key: `gain.${ref}`, stat: differenceOfMeans(at(0, 'candidate'), at(0, ref)) })),
    ...refs.map((ref) => ({ key: `length.${ref}`, stat: ratioOfMeans(at(1, 'candidate'), at(1, ref)) })),
    { key: 'tokens', stat: meanOf(at(1, 'candidate')) },
    { key: 'distinct', stat: meanOf(at(2, 'candidate')) },
    ...refs.map((ref) => ({ key: `distinct.${ref}`, stat: ratioOfMeans(at(2, 'candidate'), at(2, ref)) })),
  ];
  const finiteScores = scores.every((c) => c.every(Number.isFinite));
  const resamples = g.mean_bound === 'hall' ? null : resamplesFor(alpha, g.bootstrap_resamples);
  const bounds = !finiteScores ? stats.map(() => ({ estimate: NaN, lower: NaN, upper: NaN }))
    : resamples === null ? skewCorrectedBounds(columns, stats.map((s) => s.stat), alpha)
      : bootstrapBounds(columns, stats.map((s) => s.stat), { alpha, resamples, seed, method: g.mean_bound as 'studentized' | 'bca' });
  const b = (key: string) => bounds[stats.findIndex((s) => s.key === key)]!;
  const method = { method: g.mean_bound, resamples, seed: resamples === null ? null : seed, probes: n, anchor_is_deployed: r.answers.anchor === undefined };
  return [rewardGain(ev, g, alpha, refs, b, finiteScores, method), lengthRatio(ev, g, alpha, refs, b, method), repetition(g, alpha, refs, b, method)];
}

type Bounds = (key: string) => { estimate: number; lower: number; upper: number };
type Figures = CheckResult['figures'];

function rewardGain(ev: Evidence, g: GatePolicy, alpha: number, refs: Array<'deployed' | 'anchor'>, b: Bounds, finite: boolean, method: Figures): CheckResult {
  const r = ev.reward;
  const n = r.prompts.length;
  if (!finite) return checkWithout('reward_gain', alpha, 'fail', 'the reward scorer returned a non-finite score', method);
  const comparisons: Comparison[] = refs.map((ref) => {
    const x = b(`gain.${ref}`);
    return compare({ statistic: `mean reward gain over ${ref}`, against: ref, estimate: x.estimate, side: 'lower', bound: x.lower, limit: g.min_reward_gain, strict: true, counts: { probes: n } });
  });
  // Scores the ensemble disagrees on: too many on any side and the gain is not evidence.
  for (const side of ['candidate', ...refs] as const) {
    const u = (r.scores[side] ?? []).filter((s) => s.std > g.uncertain_spread).length;
    comparisons.push(compare({ statistic: `uncertain reward scores (${side})`, against: 'absolute', estimate: u / n, side: 'upper', bound: u / n,
      limit: g.max_uncertain_fraction, holdOnly: true, unit: 'rate', counts: { probes: n, uncertain: u } }));
  }
  return checkFrom('reward_gain', alpha, comparisons, { ...method, scorer: r.signal.name }, { failNote: 'the candidate does not score higher' });
}

function lengthRatio(ev: Evidence, g: GatePolicy, alpha: number, refs: Array<'deployed' | 'anchor'>, b: Bounds, method: Figures): CheckResult {
  const n = ev.reward.prompts.length;
  const comparisons: Comparison[] = [];
  for (const ref of refs) {
    const x = b(`length.${ref}`);
    comparisons.push(compare({ statistic: `mean tokens ÷ ${ref}`, against: ref, estimate: x.estimate, side: 'upper', bound: x.upper, limit: g.length_ratio.max, counts: { probes: n } }));
    comparisons.push(compare({ statistic: `mean tokens ÷ ${ref}`, against: ref, estimate: x.estimate, side: 'lower', bound: x.lower, limit: g.length_ratio.min, counts: { probes: n } }));
  }
  const t = b('tokens');
  if (g.max_mean_tokens !== null) {
    comparisons.push(compare({ statistic: 'mean tokens', against: 'absolute', estimate: t.estimate, side: 'upper', bound: t.upper, limit: g.max_mean_tokens, counts: { probes: n } }));
  }
  const cap = ev.sources.maxNewTokens;
  const atCap = ev.reward.answers.candidate.filter((a) => a.tokens >= cap).length;
  const longer = comparisons.some((c) => c.status === 'fail' && c.side === 'upper');
  return checkFrom('length_ratio', alpha, comparisons, { ...method, candidate_mean_tokens: r4(t.estimate), max_new_tokens: cap, candidate_at_cap: atCap },
    { failNote: longer ? 'verbosity, a reward-hacking signature' : 'truncated answers' });
}

function repetition(g: GatePolicy, alpha: number, refs: Array<'deployed' | 'anchor'>, b: Bounds, method: Figures): CheckResult {
  const probes = method['probes'] as number;
  const d = b('distinct');
  const comparisons: Comparison[] = [
    compare({ statistic: `mean distinct-${g.distinct_n}`, against: 'absolute', estimate: d.estimate, side: 'lower', bound: d.lower, limit: g.min_distinct, counts: { probes } }),
    ...refs.map((ref) => {
      const x = b(`distinct.${ref}`);
      return compare({ statistic: `distinct-${g.distinct_n} ÷ ${ref}`, against: ref, estimate: x.estimate, side: 'lower', bound: x.lower, limit: g.min_distinct_ratio, counts: { probes } });
    }),
  ];
  return checkFrom('repetition', alpha, comparisons, { ...method, n: g.distinct_n }, { failNote: 'repetitive output, a reward-hacking signature' });
}
