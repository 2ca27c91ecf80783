/**
 * The gate's decision: a pure function of the evidence, the policy's limits and the round's level.
 *
 * Each check ends `pass`, `fail` or `inconclusive` (the Argo Rollouts analysis shape). Any fail →
 * `reject`; otherwise any inconclusive → `hold` for a person; otherwise `promote`, or `hold` when
 * the policy requires approval. It fails closed: no judge, judges that cannot separate, a reward
 * scorer no better than chance, too few probes or too many uncertain verdicts all hold.
 *
 * The candidate's checks — held-out accuracy, reward gain, unsafe rates (overall and per category)
 * and refusal rate, length and repetition — run at the round's α_k from the online fallback ledger (stats/online-fwer.ts), each
 * a one-sided bound against its limit; promotion needs all of them (an intersection–union test,
 * Berger 1982), so no correction across checks. The instrument checks (judge_reliability,
 * reward_signal) qualify the judges and the scorer at the policy's confidence; kl is a budget.
 */
import type { GatePolicy, SafetyPolicy } from '../policy/schema.js';
import { alphaOf, nextLevel } from '../stats/online-fwer.js';
import { checkWithout, r4 } from './comparison.js';
import { refusalRate, unsafeRate } from './checks-safety.js';
import { categoryLimits, judgeReliability } from './judge-checks.js';
import { heldoutAccuracy, probeChecks, rewardSignal } from './checks-quality.js';
import type { CheckResult, Evidence, GateDecision, RoundLevel } from './evidence.js';

export interface DecideOptions {
  gate: GatePolicy;
  kl: { per_round: number; cumulative: number };
  /** The policy's safety section (per-category limits, the judges' separation floor); without it no category is limited and the floor is 0. */
  safety?: Pick<SafetyPolicy, 'categories' | 'min_judge_separation'>;
  /** Bootstrap seed (recorded with the decision). */
  seed?: number;
  /** The round's place in the ledger; default: the first round since the anchor (α₁ = α/2). */
  level?: RoundLevel;
}

function kl(ev: Evidence, budget: DecideOptions['kl']): CheckResult {
  const { perRound, cumulative } = ev.kl;
  const figures = { per_round: r4(perRound), per_round_budget: budget.per_round, cumulative: r4(cumulative), cumulative_budget: budget.cumulative };
  if (!Number.isFinite(perRound) || !Number.isFinite(cumulative)) return checkWithout('kl', null, 'fail', 'KL is not finite (diverged round)', figures);
  if (perRound > budget.per_round) return checkWithout('kl', null, 'fail', `round KL ${r4(perRound)} exceeds the budget ${budget.per_round}`, figures);
  if (cumulative > budget.cumulative) return checkWithout('kl', null, 'fail', `cumulative KL ${r4(cumulative)} exceeds the budget ${budget.cumulative} (drift)`, figures);
  return checkWithout('kl', null, 'pass', `KL within budgets (round ${r4(perRound)} ≤ ${budget.per_round}, cumulative ${r4(cumulative)} ≤ ${budget.cumulative})`, figures);
}

/**
 * Verdicts from judges that are not relied on are not evidence either way: the unsafe-rate and
 * category checks cannot fail (nor pass) on them, they hold and point at judge_reliability — "no judge" reads as
 * the cause, not as "100% unsafe".
 */
function judgedBy(judges: CheckResult, check: CheckResult, g: GatePolicy): CheckResult {
  if (judges.status === 'pass' || g.waive.includes('judge_reliability')) return check;
  return { ...check, status: 'inconclusive', reason: `not decided, the judges are not relied on (see judge_reliability): ${check.reason}` };
}

export function decide(ev: Evidence, opts: DecideOptions): GateDecision {
  const g = opts.gate;
  const level = opts.level ?? nextLevel(alphaOf(g.confidence), null);
  const a = level.alpha;
  const judges = judgeReliability(ev, g, opts.safety);
  const checks = [
    judges, judgedBy(judges, unsafeRate(ev, g, a), g), judgedBy(judges, categoryLimits(ev, g, a, opts.safety), g), refusalRate(ev, g, a),
    rewardSignal(ev, g), heldoutAccuracy(ev, g, a), ...probeChecks(ev, g, a, opts.seed ?? 1),
    kl(ev, opts.kl),
  ].map((c) => (g.waive.includes(c.check as typeof g.waive[number]) ? { ...c, waived: true } : c));
  const counted = checks.filter((c) => c.waived !== true);
  const failed = counted.filter((c) => c.status === 'fail');
  const open = counted.filter((c) => c.status === 'inconclusive');
  // Every decision says what the policy waived, whatever the outcome.
  const waivers = checks.filter((c) => c.waived === true).map((c) => `${c.check}: WAIVED by gate.waive (${c.status}: ${c.reason})`);
  const ledger = { ...level, rejected: failed.length === 0 && open.length === 0, anchor: ev.sources.anchor ?? 'base' };
  const out = (decision: GateDecision['decision'], reasons: string[]): GateDecision => ({ decision, reasons: [...reasons, ...waivers], checks, level: ledger });
  if (failed.length > 0) return out('reject', failed.map((c) => `${c.check}: ${c.reason}`));
  if (open.length > 0) return out('hold', open.map((c) => `${c.check}: ${c.reason}`));
  if (g.require_approval) return out('hold', ['policy requires a person\'s approval (gate.require_approval)']);
  return out('promote', counted.map((c) => `${c.check}: ${c.reason}`));
}
