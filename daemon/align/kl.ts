/**
 * Exact token-level KL(π‖π_ref) = Σ_v π(v)(log π(v) − log π_ref(v)), averaged over the response
 * positions of held-out contexts (the guard's unit: nats per token). Both adapters are inputs of
 * one program (train-programs.ts klProgram), so the full-vocabulary distributions stay in the session.
 */
import { numbers, runProgram } from '../engine/index.js';
import type { LoraAdapter } from '../model/lora.js';
import { loraFeeds, packedFeeds } from '../model/model.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';
import { packedBatch } from './policy-logps.js';
import { REF_PREFIX } from './train-programs.js';

/** Mean exact token KL(π_policy‖π_ref) over `contexts`' response tokens, `chunk` rows per run; null = base. */
export async function heldoutKl(m: AlignModel, policy: LoraAdapter | null, ref: LoraAdapter | null, contexts: PromptResponseTokens[],
  chunk: number, maxLength: number): Promise<number> {
  if (contexts.length === 0) return 0;
  const program = await m.kl(policy?.config ?? null, ref?.config ?? null);
  const lora = { ...(policy === null ? {} : loraFeeds(policy)), ...(ref === null ? {} : loraFeeds(ref, REF_PREFIX)) };
  let sum = 0, count = 0;
  for (let i = 0; i < contexts.length; i += chunk) {
    const out = await runProgram(program, packedFeeds(packedBatch(m, contexts.slice(i, i + chunk), maxLength)), lora);
    sum += numbers(out['kl_sum']!)[0]!;
    count += numbers(out['kl_count']!)[0]!;
  }
  return count === 0 ? 0 : sum / count;
}
