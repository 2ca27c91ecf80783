/**
 * Sampling responses from a policy (base + adapter, KV-cache generation of daemon/model), batched
 * sequence log-probs, and the sampled sequence-level KL.
 */
import type { LoraAdapter } from '../model/lora.js';
import { type PackedBatch, packSequences } from '../model/packing.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';

export interface SampleOptions { maxNewTokens: number; temperature: number; topP?: number; seed: number }

/** Sampled continuations (token ids, the stop token included when produced) of each prompt. */
export async function sampleResponses(m: AlignModel, adapter: LoraAdapter | null, prompts: number[][], o: SampleOptions): Promise<number[][]> {
  const tok = m.ckpt.tokenizer;
  const spec = m.model.spec;
  const stopIds = [...new Set([...(tok?.eosTokenId == null ? [] : [tok.eosTokenId]), ...spec.eosTokenIds])];
  const sampling = o.temperature > 0 ? { temperature: o.temperature, topP: o.topP ?? 1 } : undefined;
  const maxNew = Math.max(1, Math.min(o.maxNewTokens, spec.maxPositions - Math.max(...prompts.map((p) => p.length))));
  return m.model.generate(prompts, { maxNewTokens: maxNew, stopIds, seed: o.seed, ...(sampling === undefined ? {} : { sampling }) }, adapter);
}

/**
 * The packed batch every program of a round is fed (train steps, reference log-probs, KL checks):
 * sequences cut to `maxLength` (and the model's positions), several per row where they fit, one
 * copy of each prompt that several share (a pair's chosen and rejected), the head at response
 * positions only.
 */
export function packedBatch(m: AlignModel, seqs: readonly PromptResponseTokens[], maxLength = Infinity): PackedBatch {
  return packSequences(seqs, m.model.padId, { maxLength: Math.min(maxLength, m.model.spec.maxPositions), pack: true, sharePrompts: true });
}

/** Σ log-probs of each (prompt, response) under `adapter` (null = base), in chunks of `chunk` sequences. */
export async function sequenceLogps(m: AlignModel, adapter: LoraAdapter | null, seqs: PromptResponseTokens[], chunk = 16,
  maxLength = Infinity): Promise<Float64Array> {
  const out = new Float64Array(seqs.length);
  for (let i = 0; i < seqs.length; i += chunk) {
    out.set((await m.model.responseLogprobs(packedBatch(m, seqs.slice(i, i + chunk), maxLength), adapter)).seqLogps, i);
  }
  return out;
}

/**
 * Per pair, the policy's log-ratio margin against a reference,
 *   d = (log π(y⁺|x) − log π_ref(y⁺|x)) − (log π(y⁻|x) − log π_ref(y⁻|x)),
 * DPO's implicit reward margin before β (Rafailov et al. 2023, eq. 5).
 */
export async function pairLogRatios(m: AlignModel, policy: LoraAdapter | null, reference: LoraAdapter | null,
  pairs: readonly { chosen: PromptResponseTokens; rejected: PromptResponseTokens }[], chunk = 16, maxLength = Infinity): Promise<number[]> {
  const seqs = pairs.flatMap((p) => [p.chosen, p.rejected]);
  const pol = await sequenceLogps(m, policy, seqs, chunk, maxLength);
  const ref = await sequenceLogps(m, reference, seqs, chunk, maxLength);
  return pairs.map((_, i) => (pol[2 * i]! - ref[2 * i]!) - (pol[2 * i + 1]! - ref[2 * i + 1]!));
}

/**
 * Sampled sequence-level KL(π‖π_ref) ≈ mean over y ~ π(·|x) of log π(y|x) − log π_ref(y|x)
 * (the Monte-Carlo estimator OnlineDPO/PPO log as objective/kl), on the given prompts.
 */
export async function sampledSequenceKl(m: AlignModel, policy: LoraAdapter | null, reference: LoraAdapter | null, prompts: number[][],
  o: SampleOptions): Promise<{ kl: number; samples: number; meanLength: number }> {
  const responses = await sampleResponses(m, policy, prompts, o);
  const seqs = prompts.map((p, i) => ({ ids: [...p, ...responses[i]!], promptLength: p.length })).filter((s) => s.ids.length > s.promptLength);
  if (seqs.length === 0) return { kl: 0, samples: 0, meanLength: 0 };
  const lp = await sequenceLogps(m, policy, seqs);
  const lq = await sequenceLogps(m, reference, seqs);
  let s = 0;
  for (let i = 0; i < seqs.length; i++) s += lp[i]! - lq[i]!;
  return { kl: s / seqs.length, samples: seqs.length, meanLength: seqs.reduce((a, x) => a + x.ids.length - x.promptLength, 0) / seqs.length };
}
