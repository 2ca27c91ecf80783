/**
 * The reward-model ensemble: K Bradley–Terry heads (default 5) on the frozen base's last-token
 * hidden state, each on its own bootstrap resample of the preference pairs (heads.ts), warm-started
 * every round from the previous ensemble. Scores per response: ensemble mean, standard deviation
 * across members, and each member's reward (the gate's RewardScorer). Held-out accuracy and
 * expected calibration error of P(chosen ≻ rejected) = σ(mean r⁺ − mean r⁻) are reported per round.
 *
 * Not built: heads with their own LoRA; the heads see the frozen base.
 */
import type { RewardScore, RewardScorer } from '../gate/evidence.js';
import type { Example } from '../store/buffer.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Prompt } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';
import { lastTokenHidden } from './features.js';
import { sampleResponses } from './policy-logps.js';
import { type HeadEnsemble, expectedCalibrationError, freshHeads, headScores, standardise, standardiser, trainHeads } from './heads.js';

export interface RewardKnobs {
  /** Ensemble members (default 5; the heads' knobs are this table's, no policy field sets them yet). */
  k: number;
  steps: number;
  learningRate: number;
  weightDecay: number;
  /** c in c·(r⁺ + r⁻)² (TRL `center_rewards_coefficient`; Eisenstein et al. 2023 use 0.01). */
  centering: number;
  seed: number;
  maxLength: number;
  /** Online pairs (see onlinePairs): null = off (the default). */
  onlinePairs: { prompts: number; z: number; maxNewTokens: number; temperature: number } | null;
}

export const DEFAULT_REWARD_KNOBS: RewardKnobs = {
  k: 5, steps: 150, learningRate: 1e-2, weightDecay: 1e-3, centering: 0.01, seed: 0, maxLength: 256, onlinePairs: null,
};

export interface RewardRoundMetrics {
  pairs: number;
  loss: number;
  heldoutPairs: number;
  /** Held-out pairs where the ensemble mean prefers the chosen response. */
  heldoutCorrect: number;
  /** Share of held-out pairs where the ensemble mean prefers the chosen response. */
  heldoutAccuracy: number | null;
  /** ECE of σ(mean margin) on held-out pairs (10 equal-width confidence bins). */
  ece: number | null;
  /** Mean ensemble std of held-out responses. */
  heldoutSpread: number | null;
}

/** A preference; `rejectedPrompt` when the rejected answer was to another prompt (binary votes paired across prompts). */
interface PairText { prompt: Prompt; chosen: string; rejected: string; margin: number; rejectedPrompt?: Prompt }

/**
 * The preferences in `xs`: pair examples (preferences, edits, ratings, up/down votes on one
 * prompt), then unpaired binary (KTO) votes as up-over-down pairs across prompts, in id order —
 * the ranking form of "up answers score above down answers", so the heads learn from binary
 * feedback too.
 */
export function asPairs(xs: Example[]): PairText[] {
  const pairs: PairText[] = xs.filter((e) => e.type === 'pair' && e.chosen !== null && e.rejected !== null)
    .map((e) => ({ prompt: e.prompt, chosen: e.chosen!, rejected: e.rejected!, margin: e.margin ?? 0 }));
  const votes = xs.filter((e) => e.type === 'kto' && e.response !== null).sort((a, b) => a.id - b.id);
  const ups = votes.filter((e) => e.label === 'up');
  const downs = votes.filter((e) => e.label === 'down');
  for (let i = 0; i < Math.min(ups.length, downs.length); i++) {
    pairs.push({ prompt: ups[i]!.prompt, chosen: ups[i]!.response!, rejectedPrompt: downs[i]!.prompt, rejected: downs[i]!.response!, margin: 0 });
  }
  return pairs;
}

async function pairFeatures(m: AlignModel, pairs: PairText[], maxLength: number): Promise<{ c: Float32Array; r: Float32Array }> {
  const tok = m.ckpt.tokenizer!;
  const c = await lastTokenHidden(m, pairs.map((p) => tok.promptResponse(p.prompt, p.chosen)), undefined, 16, maxLength);
  const r = await lastTokenHidden(m, pairs.map((p) => tok.promptResponse(p.rejectedPrompt ?? p.prompt, p.rejected)), undefined, 16, maxLength);
  return { c, r };
}

/**
 * The ensemble's ranking on held-out preferences (asPairs of the held-out examples): how many it
 * ranks right (ensemble mean of the chosen above the rejected; a tie is wrong), and P(chosen ≻
 * rejected) per pair for calibration.
 */
export async function heldoutRanking(m: AlignModel, e: HeadEnsemble, heldout: Example[], maxLength = DEFAULT_REWARD_KNOBS.maxLength):
  Promise<{ pairs: number; correct: number; p: number[]; spread: number | null }> {
  const held = asPairs(heldout);
  if (held.length === 0) return { pairs: 0, correct: 0, p: [], spread: null };
  const f = await pairFeatures(m, held, maxLength);
  const sc = summarise(headScores(e, standardise(e, f.c), held.length), held.length, e.k);
  const sr = summarise(headScores(e, standardise(e, f.r), held.length), held.length, e.k);
  const p = sc.map((c, i) => 1 / (1 + Math.exp(-(c.mean - sr[i]!.mean))));
  return { pairs: held.length, correct: p.filter((x) => x > 0.5).length, p, spread: [...sc, ...sr].reduce((s, x) => s + x.std, 0) / (2 * held.length) };
}

/** Per-response scores from member scores [n, K]. */
export function summarise(scores: Float32Array, n: number, k: number): RewardScore[] {
  return Array.from({ length: n }, (_, i) => {
    const members = Array.from(scores.subarray(i * k, (i + 1) * k));
    const mean = members.reduce((s, x) => s + x, 0) / k;
    const std = Math.sqrt(members.reduce((s, x) => s + (x - mean) ** 2, 0) / Math.max(1, k - 1));
    return { mean, std, members };
  });
}

/** Train (warm-started from `previous` when given) on the window's pairs; evaluate on held-out pairs. */
export async function trainRewardEnsemble(input: {
  model: AlignModel; window: Example[]; heldout: Example[]; previous?: HeadEnsemble | null; knobs?: Partial<RewardKnobs>;
}): Promise<{ ensemble: HeadEnsemble; metrics: RewardRoundMetrics }> {
  const k = { ...DEFAULT_REWARD_KNOBS, ...input.knobs };
  const m = input.model;
  const H = m.ckpt.spec.hiddenSize;
  const train = asPairs(input.window.filter((e) => !e.heldout));
  const held = asPairs(input.heldout);
  let ensemble = input.previous ?? null;
  let loss = NaN;
  if (train.length > 0) {
    const f = await pairFeatures(m, train, k.maxLength);
    if (ensemble === null) {
      const all = new Float32Array(f.c.length + f.r.length);
      all.set(f.c);
      all.set(f.r, f.c.length);
      const st = standardiser(all, 2 * train.length, H);
      ensemble = freshHeads(k.k, H, k.seed, st.mu, st.sigma);
    }
    const res = await trainHeads('bt', ensemble, {
      chosen: standardise(ensemble, f.c), rejected: standardise(ensemble, f.r), margin: Float32Array.from(train.map((p) => p.margin)),
    }, train.length, { k: k.k, steps: k.steps, learningRate: k.learningRate, weightDecay: k.weightDecay, seed: k.seed, centering: k.centering });
    ensemble = res.ensemble;
    loss = res.loss;
  }
  if (ensemble === null) throw new RangeError('trainRewardEnsemble: no training pairs and no previous ensemble');
  const metrics: RewardRoundMetrics = { pairs: train.length, loss, heldoutPairs: held.length, heldoutCorrect: 0, heldoutAccuracy: null, ece: null, heldoutSpread: null };
  if (held.length > 0) {
    const h = await heldoutRanking(m, ensemble, input.heldout, k.maxLength);
    metrics.heldoutCorrect = h.correct;
    metrics.heldoutAccuracy = h.correct / h.pairs;
    metrics.ece = expectedCalibrationError(h.p, h.p.map(() => true));
    metrics.heldoutSpread = h.spread;
  }
  return { ensemble, metrics };
}

/** Score responses to prompts with the ensemble: mean, std and members per response. */
export async function scoreResponses(m: AlignModel, e: HeadEnsemble, prompts: readonly Prompt[], responses: readonly string[], maxLength = 256): Promise<RewardScore[]> {
  const tok = m.ckpt.tokenizer!;
  if (prompts.length === 0) return [];
  const f = await lastTokenHidden(m, prompts.map((p, i) => tok.promptResponse(p, responses[i]!)), undefined, 16, maxLength);
  return summarise(headScores(e, standardise(e, f), prompts.length), prompts.length, e.k);
}

/** The gate's RewardScorer backed by the ensemble. */
export function rewardScorer(m: AlignModel, e: HeadEnsemble, maxLength = 256): RewardScorer {
  return { score: (prompts, responses) => scoreResponses(m, e, prompts, responses, maxLength) };
}

/**
 * Online pairs (off by default): two sampled responses from the candidate per prompt,
 * kept as (chosen, rejected) only when the ensemble agrees — the lower confidence bound of the
 * member margins, mean − z·std, is above 0 (conservative ensemble use as Coste et al. 2023).
 */
export async function onlinePairs(m: AlignModel, policy: LoraAdapter | null, e: HeadEnsemble, prompts: Prompt[],
  o: { z: number; maxNewTokens: number; temperature: number; seed: number }): Promise<{ prompt: Prompt; chosen: string; rejected: string; lcb: number }[]> {
  const tok = m.ckpt.tokenizer!;
  const ids = prompts.map((p) => tok.encodePrompt(p));
  const a = await sampleResponses(m, policy, ids, { maxNewTokens: o.maxNewTokens, temperature: o.temperature, seed: o.seed });
  const b = await sampleResponses(m, policy, ids, { maxNewTokens: o.maxNewTokens, temperature: o.temperature, seed: o.seed + 7777 });
  const ta = a.map((x) => tok.decode(x, { skipSpecialTokens: true }));
  const tb = b.map((x) => tok.decode(x, { skipSpecialTokens: true }));
  const sa = await scoreResponses(m, e, prompts, ta);
  const sb = await scoreResponses(m, e, prompts, tb);
  const out: { prompt: Prompt; chosen: string; rejected: string; lcb: number }[] = [];
  prompts.forEach((p, i) => {
    if (ta[i] === tb[i]) return;
    const d = sa[i]!.members.map((x, j) => x - sb[i]!.members[j]!);
    const mean = d.reduce((s, x) => s + x, 0) / d.length;
    const std = Math.sqrt(d.reduce((s, x) => s + (x - mean) ** 2, 0) / Math.max(1, d.length - 1));
    if (mean - o.z * std > 0) out.push({ prompt: p, chosen: ta[i]!, rejected: tb[i]!, lcb: mean - o.z * std });
    else if (-mean - o.z * std > 0) out.push({ prompt: p, chosen: tb[i]!, rejected: ta[i]!, lcb: -mean - o.z * std });
  });
  return out;
}
