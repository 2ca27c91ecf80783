/**
 * The KL guard of a round: exact KL on held-out contexts against the deployed version (the
 * per-round budget, kl.per_round) and the anchor (the cumulative budget, kl.cumulative), measured
 * at the start and every kl.check_steps optimizer steps; a snapshot of the last in-budget state to
 * roll back to; a stop when the next check would cross a budget at the last interval's pace; and
 * adaptive β (Ziegler et al. 2019) after each check in budget. NaN/Inf in the adapter or the KL
 * throws TRAINING_DIVERGED.
 */
import type { TrainState } from '../engine/index.js';
import type { LoraAdapter } from '../model/lora.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import { type ParamSnapshot, copyParams, diverged, finiteAdapter, restoreParams, stateToAdapter } from './candidate-state.js';
import type { AlignModel } from './context.js';
import type { TrainingKnobs } from './knobs.js';
import { heldoutKl } from './kl.js';
import { adaptBeta } from './schedule.js';

export interface KlCheck { step: number; perRound: number; cumulative: number; beta: number }

/** Why the guard ends a round: over a budget, or the deployed version already at the cumulative one. */
export interface KlStop { stopReason: 'kl_budget' | 'kl_budget_exhausted'; reason: string }

export interface KlGuardInput {
  model: AlignModel;
  deployed: LoraAdapter | null;
  anchor: LoraAdapter | null;
  /** The candidate's starting adapter (its shape names the train state's tensors). */
  start: LoraAdapter;
  contexts: PromptResponseTokens[];
  knobs: TrainingKnobs;
}

export interface KlGuard {
  /** β now (adapted after each check when kl.adaptive_beta is enabled). */
  readonly beta: number;
  /** Every check so far, step 0 first (the round reports this array). */
  readonly checks: KlCheck[];
  /** The state kept so far: its step and KL figures. */
  readonly kept: { step: number; perRound: number; cumulative: number };
  /** The check at step 0; a stop when the deployed version is already at the cumulative budget. */
  begin(state: TrainState): Promise<KlStop | null>;
  /** Is a check due after this step (1-based)? Every kl.check_steps steps, and after the last. */
  due(step: number, last: boolean): boolean;
  /** Check after `step`; over a budget, `state` is rolled back to the last in-budget snapshot. */
  check(state: TrainState, step: number, last: boolean): Promise<KlStop | null>;
}

export function klGuard(g: KlGuardInput): KlGuard {
  const k = g.knobs;
  const budget = k.klBudget;
  const checks: KlCheck[] = [];
  let beta = k.beta;
  let kept = { step: 0, perRound: 0, cumulative: 0 };
  let snapshot: ParamSnapshot = {};
  // The previous check's figures: the pace of the last interval.
  let previous = { perRound: 0, cumulative: 0 };

  const measure = async (cur: LoraAdapter): Promise<{ perRound: number; cumulative: number }> => {
    const chunk = 2 * k.microBatchSize;
    return {
      perRound: await heldoutKl(g.model, cur, g.deployed, g.contexts, chunk, k.maxLength),
      cumulative: await heldoutKl(g.model, cur, g.anchor, g.contexts, chunk, k.maxLength),
    };
  };
  const keep = (state: TrainState, step: number, kl: { perRound: number; cumulative: number }): void => {
    snapshot = copyParams(state);
    kept = { step, ...kl };
  };

  return {
    get beta() { return beta; },
    checks,
    get kept() { return kept; },
    async begin(state) {
      // Per round is 0 by construction (warm start = reference) unless no adapter is deployed; the
      // cumulative one is the deployed version's drift from the anchor.
      const kl = await measure(stateToAdapter(state, g.start));
      checks.push({ step: 0, ...kl, beta });
      previous = kl;
      kept = { step: 0, ...kl };
      if (kl.cumulative >= budget.cumulative) {
        return {
          stopReason: 'kl_budget_exhausted',
          reason: `the deployed version is already ${kl.cumulative.toFixed(4)} nats/token from the anchor (cumulative budget ${budget.cumulative}); nothing trained`,
        };
      }
      keep(state, 0, kl);
      return null;
    },
    due: (step, last) => step % k.klEveryNSteps === 0 || last,
    async check(state, step, last) {
      const cur = stateToAdapter(state, g.start);
      if (!finiteAdapter(cur)) throw diverged(`adapter values are not finite after step ${step}`);
      const kl = await measure(cur);
      if (!Number.isFinite(kl.perRound) || !Number.isFinite(kl.cumulative)) throw diverged(`KL is not finite after step ${step}`);
      checks.push({ step, ...kl, beta });
      if (kl.perRound > budget.perRound || kl.cumulative > budget.cumulative) {
        // Over budget: roll back to the last in-budget state and stop.
        restoreParams(state, snapshot);
        return {
          stopReason: 'kl_budget',
          reason: `KL ${kl.perRound.toFixed(4)} (round) / ${kl.cumulative.toFixed(4)} (cumulative) nats/token after step ${step} exceeds the budget `
            + `${budget.perRound} / ${budget.cumulative}; kept step ${kept.step}`,
        };
      }
      keep(state, step, kl);
      // The next check would cross a budget if the drift keeps its last pace: stop here, in budget.
      if (!last && (2 * kl.perRound - previous.perRound > budget.perRound || 2 * kl.cumulative - previous.cumulative > budget.cumulative)) {
        return {
          stopReason: 'kl_budget',
          reason: `KL ${kl.perRound.toFixed(4)} / ${kl.cumulative.toFixed(4)} nats/token after step ${step}; at this pace the next ${k.klEveryNSteps} step(s) would exceed the budget`,
        };
      }
      previous = kl;
      const ab = k.adaptiveBeta;
      if (ab !== null) beta = Math.min(ab.maxBeta, Math.max(ab.minBeta, adaptBeta(beta, kl.perRound, ab.target, ab.kBeta)));
      return null;
    },
  };
}
