/**
 * Sampling responses from a policy (base + adapter) and the sampled sequence-level KL.
 *
 * STAND-IN for the model programs' KV-cache generation: each new token re-runs the full forward
 * over the right-padded batch and reads each row's last real position — O(T²) per sequence, fine
 * for the short held-out probes a round samples. Sampling is transformers' (temperature, top-p).
 */
import * as ort from 'onnxruntime-node';
import { f32, i64 } from '../engine/index.js';
import { createRng } from '../model/rng.js';
import { sampleToken } from '../model/sampling.js';
import { packLogProbBatch } from '../model/batch.js';
import type { LoraAdapter } from '../model/lora.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';
import { positionFeeds } from './forward.js';
import { adapterFeeds, computeLogps } from './programs.js';

export interface SampleOptions { maxNewTokens: number; temperature: number; topP?: number; seed: number }

/** Sampled continuations (token ids, eos included when produced) of each prompt. */
export async function sampleResponses(m: AlignModel, adapter: LoraAdapter, prompts: number[][], o: SampleOptions): Promise<number[][]> {
  const session = await m.logits();
  const spec = m.ckpt.spec;
  const V = spec.vocabSize;
  const eos = new Set(spec.eosTokenIds);
  const pad = spec.padTokenId ?? spec.eosTokenIds[0] ?? 0;
  const rng = createRng(o.seed);
  const seqs = prompts.map((p) => [...p]);
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  const lora = adapterFeeds(adapter);
  for (let step = 0; step < o.maxNewTokens && done.some((d) => !d); step++) {
    const rows = seqs.map((s, i) => ({ s, i })).filter((r) => !done[r.i]);
    const T = Math.max(...rows.map((r) => r.s.length));
    const ids = new Int32Array(rows.length * T).fill(pad);
    rows.forEach((r, b) => ids.set(r.s, b * T));
    const pos = positionFeeds(spec, T);
    const res = await session.run({
      input_ids: i64([rows.length, T], ids), rope_cos: f32([T, spec.headDim], pos.cos), rope_sin: f32([T, spec.headDim], pos.sin),
      attn_bias: f32([pos.group * T, T], pos.bias), ...lora,
    }, ['logits']);
    const logits = res['logits']!.data as Float32Array;
    rows.forEach((r, b) => {
      const off = (b * T + r.s.length - 1) * V;
      const tok = o.temperature > 0 ? sampleToken(logits, { temperature: o.temperature, topP: o.topP ?? 1 }, rng, off, V)
        : indexOfMax(logits, off, V);
      r.s.push(tok);
      out[r.i]!.push(tok);
      if (eos.has(tok) || r.s.length >= spec.maxPositions) done[r.i] = true;
    });
  }
  return out;
}

function indexOfMax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i]! > x[off + best]!) best = i;
  return best;
}

/** Σ log-probs of each (prompt, response) under `adapter`, in chunks of `chunk` rows. */
export async function sequenceLogps(m: AlignModel, adapter: LoraAdapter, seqs: PromptResponseTokens[], chunk = 16,
  maxLength = Infinity): Promise<Float64Array> {
  const session = await m.logps();
  const pad = m.ckpt.spec.padTokenId ?? m.ckpt.spec.eosTokenIds[0] ?? 0;
  const out = new Float64Array(seqs.length);
  for (let i = 0; i < seqs.length; i += chunk) {
    const part = seqs.slice(i, i + chunk);
    out.set(await computeLogps(m, session, adapter, packLogProbBatch(part, pad, maxLength)), i);
  }
  return out;
}

/**
 * Sampled sequence-level KL(π‖π_ref) ≈ mean over y ~ π(·|x) of log π(y|x) − log π_ref(y|x)
 * (the Monte-Carlo estimator OnlineDPO/PPO log as objective/kl), on the given prompts.
 */
export async function sampledSequenceKl(m: AlignModel, policy: LoraAdapter, reference: LoraAdapter, prompts: number[][],
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

void ort;
