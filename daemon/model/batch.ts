/**
 * Packing prompt/response token sequences into the rectangular batches the log-prob programs
 * take: right padding (real tokens at positions 0..len−1, so position ids need no shift and,
 * attention being causal, pads never change a real token's logits), next-token targets, and a
 * mask that keeps only response tokens (prompt tokens and pads contribute nothing).
 */
import { AligndError } from '../base/errors.js';
import type { PromptResponseTokens } from './tokenizer.js';

export interface LogProbBatch {
  batch: number;
  /** Padded length T. */
  length: number;
  /** [B, T] token ids, pads = padId. */
  inputIds: Int32Array;
  /** [B, T] 1 for real tokens, 0 for pads. */
  attentionMask: Float32Array;
  /** [B, T] the token predicted at each position (ids shifted left by one; 0 where masked). */
  targets: Int32Array;
  /** [B, T] 1 where targets[b, t] is a response token, else 0. */
  targetMask: Float32Array;
  /** Per row: prompt tokens dropped from the left to fit maxLength. */
  truncatedPrompt: number[];
  /** Per row: response tokens dropped from the right to fit maxLength. */
  truncatedResponse: number[];
}

/** A sequence cut to fit `maxLength` tokens, and how many tokens it lost on each side. */
export interface FittedSequence { ids: number[]; promptLength: number; cutPrompt: number; cutResponse: number }

/**
 * Fit sequence `i` into `maxLength` tokens: it loses prompt tokens from the left first (keeping at
 * least one), then response tokens from the right. Packed batches (packing.ts) cut the same way.
 */
export function fitSequence(s: PromptResponseTokens, i: number, maxLength: number): FittedSequence {
  if (!(s.promptLength >= 1 && s.promptLength < s.ids.length)) {
    throw new AligndError('EVENT_INVALID', `sequence ${i} needs at least one prompt and one response token (prompt ${s.promptLength}, total ${s.ids.length})`, {
      action: 'drop examples with an empty prompt or response',
    });
  }
  let prompt = s.ids.slice(0, s.promptLength);
  let response = s.ids.slice(s.promptLength);
  let cutPrompt = 0;
  let cutResponse = 0;
  if (prompt.length + response.length > maxLength) {
    if (maxLength < 2) throw new AligndError('CONFIG_INVALID', `maxLength ${maxLength} leaves no room for a prompt and a response token`, { action: 'raise the maximum sequence length' });
    cutPrompt = Math.min(prompt.length - 1, prompt.length + response.length - maxLength);
    prompt = prompt.slice(cutPrompt);
    cutResponse = Math.max(0, prompt.length + response.length - maxLength);
    response = response.slice(0, response.length - cutResponse);
  }
  return { ids: [...prompt, ...response], promptLength: prompt.length, cutPrompt, cutResponse };
}

/**
 * Pack sequences; a sequence over `maxLength` loses prompt tokens from the left first (keeping
 * at least one), then response tokens from the right, and says so in the result.
 */
export function packLogProbBatch(seqs: readonly PromptResponseTokens[], padId: number, maxLength = Infinity): LogProbBatch {
  if (seqs.length === 0) throw new AligndError('INTERNAL', 'packLogProbBatch of no sequences');
  const rows = seqs.map((s, i) => fitSequence(s, i, maxLength));
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.ids.length));
  const inputIds = new Int32Array(B * T).fill(padId);
  const attentionMask = new Float32Array(B * T);
  const targets = new Int32Array(B * T);
  const targetMask = new Float32Array(B * T);
  rows.forEach((r, b) => {
    for (let t = 0; t < r.ids.length; t++) {
      inputIds[b * T + t] = r.ids[t]!;
      attentionMask[b * T + t] = 1;
      if (t + 1 < r.ids.length) {
        targets[b * T + t] = r.ids[t + 1]!;
        if (t + 1 >= r.promptLength) targetMask[b * T + t] = 1;
      }
    }
  });
  return {
    batch: B, length: T, inputIds, attentionMask, targets, targetMask,
    truncatedPrompt: rows.map((r) => r.cutPrompt), truncatedResponse: rows.map((r) => r.cutResponse),
  };
}
