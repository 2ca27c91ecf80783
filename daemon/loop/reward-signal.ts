/**
 * A round's reward signal for the gate: both reward scorers are trained on the training split only
 * (warm-started from the last round's) and rank the same held-out preferences (pairs, and in KTO
 * rounds up-over-down votes: asPairs); the gate scores with the one that ranks more of them right
 * this round, and reads its counts as `reward.signal` (its reward_gain check holds when their lower
 * bound is not above chance). The round reports both scorers' figures.
 *
 * - the linear-head ensemble on the frozen base's last-token features (align/reward.ts): cheap;
 * - the Bradley–Terry LoRA reward model ensemble (align/reward-model.ts): its own window of new
 *   pairs plus a larger replay share than the policy's (a reward model has no KL budget, and more
 *   of the past is more signal: measured in align/README.md).
 *
 * Choosing the better of two on the same held-out pairs makes the reported accuracy slightly
 * optimistic (a maximum of two estimates); with two candidates the effect is small next to the
 * binomial bound the gate puts on it.
 */
import { AligndError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { Example, ReplayBuffer, WindowRequest } from '../store/buffer.js';
import type { RewardScorer, RewardSignal } from '../gate/evidence.js';
import type { AlignModel } from '../align/context.js';
import { heldoutRanking, rewardScorer, trainRewardEnsemble, type RewardRoundMetrics } from '../align/reward.js';
import { DEFAULT_REWARD_MODEL_KNOBS, rewardModelScorer, trainRewardModel, type RewardModelMetrics } from '../align/reward-model.js';
import type { ModelRuntime } from './model-runtime.js';

export interface RewardSignals {
  /** The scorer the gate uses (undefined: none trained yet). */
  scorer: RewardScorer | undefined;
  /** Its held-out ranking this round (0 of 0 when there is no scorer: the gate holds). */
  signal: RewardSignal;
  /** The held-out examples the signal was measured on (the gate records their event ids). */
  used: Example[];
  heads: RewardRoundMetrics | null;
  model: RewardModelMetrics | null;
}

export async function trainRewardSignals(rt: ModelRuntime, inp: {
  m: AlignModel; buffer: ReplayBuffer; round: number; previousMark: number | undefined;
  /** The round's data caps (per user, per tenant, new users), as its training window's. */
  caps: Pick<WindowRequest, 'maxUserShare' | 'maxTenantShare' | 'newUsers'>;
  /** The round's feedback types: in KTO rounds the reward model's window takes the round's votes too. */
  types: ReadonlyArray<'pair' | 'kto'>;
  /** The heads' training window (preferences, and a KTO round's votes) and the held-out preferences and votes. */
  window: Example[]; heldout: Example[];
  log: Logger; onProgress?: (what: string, fields: Record<string, unknown>) => void; signal?: AbortSignal;
}): Promise<RewardSignals> {
  const { m, buffer, round } = inp;
  const model = rt.model;
  const heldout = inp.heldout.filter((e) => e.type === 'pair' || e.type === 'kto');
  const out: RewardSignals = { scorer: undefined, signal: { name: 'linear-heads', heldoutPairs: 0, heldoutCorrect: 0 }, used: [], heads: null, model: null };
  const options: { name: string; correct: number; pairs: number; scorer: RewardScorer }[] = [];

  let heads = rt.heads('reward');
  if (inp.window.length > 0) {
    inp.onProgress?.('reward.train', { model, round, examples: inp.window.length });
    const r = await trainRewardEnsemble({ model: m, window: inp.window, heldout, previous: heads });
    heads = r.ensemble;
    rt.saveHeads('reward', heads);
    out.heads = r.metrics;
    options.push({ name: `linear-heads-x${heads.k}`, correct: r.metrics.heldoutCorrect, pairs: r.metrics.heldoutPairs, scorer: rewardScorer(m, heads) });
  } else if (heads !== null) {
    const h = await heldoutRanking(m, heads, heldout);
    options.push({ name: `linear-heads-x${heads.k}`, correct: h.correct, pairs: h.pairs, scorer: rewardScorer(m, heads) });
  }

  const k = DEFAULT_REWARD_MODEL_KNOBS;
  const rmPairs = buffer.window({ model, types: ['pair'], sinceRound: inp.previousMark, replayFraction: k.replayFraction, ...inp.caps, seed: round }).examples;
  const rmWindow = inp.types.includes('kto') ? [...rmPairs, ...inp.window.filter((e) => e.type === 'kto')] : rmPairs;
  const previous = await rt.rewardModel();
  if (rmWindow.length > 0 || previous !== null) {
    inp.onProgress?.('reward_model.train', { model, round, pairs: rmWindow.length, members: k.members });
    const train = (window: Example[]) => trainRewardModel({ model: m, window, heldout, previous, knobs: { seed: round },
      ...(inp.signal === undefined ? {} : { signal: inp.signal }) });
    let r: Awaited<ReturnType<typeof train>> | null;
    try {
      r = await train(rmWindow);
      if (rmWindow.length > 0) rt.saveRewardModel(r.rewardModel);
    } catch (err) {
      if (!(err instanceof AligndError && err.code === 'TRAINING_DIVERGED')) throw err;
      // A diverged update is discarded; the previous reward model (if any) is measured and used.
      inp.log.warn('reward model diverged; the update is discarded', { round, reason: err.message });
      r = previous === null ? null : await train([]);
    }
    if (r !== null) {
      out.model = r.metrics;
      options.push({ name: r.metrics.name, correct: r.metrics.heldoutCorrect, pairs: r.metrics.heldoutPairs, scorer: rewardModelScorer(m, r.rewardModel) });
    }
  }

  // The reward model wins ties (it is the one built to track the truth).
  const best = options.reduce<(typeof options)[number] | undefined>((a, b) => (a === undefined || b.correct >= a.correct ? b : a), undefined);
  if (best !== undefined) {
    out.scorer = best.scorer;
    out.signal = { name: best.name, heldoutPairs: best.pairs, heldoutCorrect: best.correct };
    out.used = heldout;
    inp.log.info('reward signal', { round, ...out.signal, accuracy: best.pairs === 0 ? null : best.correct / best.pairs,
      candidates: options.map((o) => `${o.name} ${o.correct}/${o.pairs}`) });
  }
  return out;
}
