/**
 * Features for the reward and safety heads: the frozen base model's final hidden state at each
 * (prompt, response)'s last real token (daemon/model `hiddenStates`) — the representation TRL's
 * AutoModelForSequenceClassification scores with its linear head.
 */
import { packLogProbBatch } from '../model/batch.js';
import type { LoraAdapter } from '../model/lora.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';

/** [N·H] last-token hidden states of `seqs` under `adapter` (default: the base model). */
export async function lastTokenHidden(m: AlignModel, seqs: PromptResponseTokens[], adapter: LoraAdapter | null = null,
  chunk = 16, maxLength = 256): Promise<Float32Array> {
  const H = m.model.spec.hiddenSize;
  const out = new Float32Array(seqs.length * H);
  for (let i = 0; i < seqs.length; i += chunk) {
    const b = packLogProbBatch(seqs.slice(i, i + chunk), m.model.padId, Math.min(maxLength, m.model.spec.maxPositions));
    out.set(await m.model.hiddenStates(b, adapter), i * H);
  }
  return out;
}
