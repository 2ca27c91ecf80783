/**
 * Features for the reward and safety heads: the frozen base model's final hidden state at each
 * (prompt, response)'s last real token — the representation TRL's AutoModelForSequenceClassification
 * scores with its linear head.
 */
import { f32, i64 } from '../engine/index.js';
import { packLogProbBatch } from '../model/batch.js';
import type { LoraAdapter } from '../model/lora.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';
import { positionFeeds } from './forward.js';
import { adapterFeeds } from './programs.js';

/** [N·H] last-token hidden states of `seqs` under `adapter` (default: the base model). */
export async function lastTokenHidden(m: AlignModel, seqs: PromptResponseTokens[], adapter: LoraAdapter = m.zeroAdapter(),
  chunk = 16, maxLength = 256): Promise<Float32Array> {
  const session = await m.logits();
  const spec = m.ckpt.spec;
  const H = spec.hiddenSize;
  const pad = spec.padTokenId ?? spec.eosTokenIds[0] ?? 0;
  const out = new Float32Array(seqs.length * H);
  const lora = adapterFeeds(adapter);
  for (let i = 0; i < seqs.length; i += chunk) {
    const b = packLogProbBatch(seqs.slice(i, i + chunk), pad, maxLength);
    const pos = positionFeeds(spec, b.length);
    const res = await session.run({
      input_ids: i64([b.batch, b.length], b.inputIds), rope_cos: f32([b.length, spec.headDim], pos.cos), rope_sin: f32([b.length, spec.headDim], pos.sin),
      attn_bias: f32([pos.group * b.length, b.length], pos.bias), ...lora,
    }, ['hidden']);
    const h = res['hidden']!.data as Float32Array;
    for (let r = 0; r < b.batch; r++) {
      let last = 0;
      for (let t = 0; t < b.length; t++) if (b.attentionMask[r * b.length + t] === 1) last = t;
      out.set(h.subarray((r * b.length + last) * H, (r * b.length + last + 1) * H), (i + r) * H);
    }
  }
  return out;
}
