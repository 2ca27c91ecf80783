/**
 * A realistic preference workload for the benches (issue 18 item 3): token lengths shaped like
 * production chat, so padding, shared prompts and long-prompt attention cost show up as they would
 * in a round, not the fixed 4 × 128 of the synthetic line.
 *
 * Lengths (tokens), drawn from log-normals truncated to a range (redrawn, not clipped, so no mass
 * piles up at the bounds):
 * - prompt: median 1000, σ 0.8, in [20, 2000]. Production chat prompts carry the conversation so
 *   far and a system prompt, so they are long: the Azure LLM inference trace (conversation service,
 *   Nov 2023; Patel et al., "Splitwise", ISCA 2024; github.com/Azure/AzurePublicDataset,
 *   AzureLLMInferenceTrace_conv.csv) has a median context of about 1020 tokens.
 * - response: median 130, σ 0.9, in [10, 600]. The same trace's median output is about 129 tokens
 *   (mean ≈ 117 and P90 ≈ 398 are quoted for it by later papers); σ 0.9 puts this P90 near 410.
 *   The σ's are our assumptions (a long right tail like the trace's), not fitted to the trace.
 * - a shared system prompt of 256 tokens opens 80% of the prompts (assumption: most production
 *   traffic goes through a few deployments, each with one system prompt); it counts toward the
 *   prompt's drawn length, and a prompt too short to hold it plus 16 tokens of its own has none.
 * - chosen and rejected share the prompt; their lengths are drawn independently.
 *
 * Token ids are uniform over the vocabulary (the bench models have random weights: only lengths
 * matter). Pure and seeded: the same parameters and seed give the same pairs on every machine.
 */
import { createRng, type Rng } from '../daemon/base/random.js';

export interface LengthDistribution { median: number; sigma: number; min: number; max: number }

export interface WorkloadParams {
  prompt: LengthDistribution;
  response: LengthDistribution;
  systemPromptLength: number;
  /** Share of prompts that open with the shared system prompt. */
  systemPromptShare: number;
  vocabSize: number;
}

/** The production-chat shape documented above, for a given vocabulary. */
export const chatWorkload = (vocabSize: number): WorkloadParams => ({
  prompt: { median: 1000, sigma: 0.8, min: 20, max: 2000 },
  response: { median: 130, sigma: 0.9, min: 10, max: 600 },
  systemPromptLength: 256,
  systemPromptShare: 0.8,
  vocabSize,
});

export interface WorkloadPair {
  prompt: number[];
  chosen: number[];
  rejected: number[];
  /** Whether the prompt opens with the shared system prompt. */
  system: boolean;
}

/** A length from a log-normal truncated to [min, max] (redrawn until inside; rounded to a token count). */
export function drawLength(rng: Rng, d: LengthDistribution): number {
  if (!(d.min >= 1 && d.min <= d.max && d.median > 0 && d.sigma >= 0)) throw new Error(`bad length distribution ${JSON.stringify(d)}`);
  for (let i = 0; i < 10_000; i++) {
    const x = Math.round(d.median * Math.exp(d.sigma * rng.normal()));
    if (x >= d.min && x <= d.max) return x;
  }
  throw new Error(`length distribution ${JSON.stringify(d)} puts almost no mass in [${d.min}, ${d.max}]`);
}

/** `n` preference pairs from the workload, seeded. */
export function workloadPairs(n: number, seed: number, p: WorkloadParams): WorkloadPair[] {
  const rng = createRng(seed);
  const tokens = (k: number): number[] => Array.from({ length: k }, () => Math.floor(rng.next() * p.vocabSize));
  const system = tokens(p.systemPromptLength);
  return Array.from({ length: n }, () => {
    const length = drawLength(rng, p.prompt);
    const withSystem = rng.next() < p.systemPromptShare && length >= p.systemPromptLength + 16;
    const prompt = withSystem ? [...system, ...tokens(length - system.length)] : tokens(length);
    const chosen = tokens(drawLength(rng, p.response));
    const rejected = tokens(drawLength(rng, p.response));
    return { prompt, chosen, rejected, system: withSystem };
  });
}

/** The pairs as prompt + response sequences, the shape the log-prob batches pack (chosen rows, then rejected rows). */
export function workloadRows(pairs: readonly WorkloadPair[]): { chosen: { ids: number[]; promptLength: number }[]; rejected: { ids: number[]; promptLength: number }[] } {
  const row = (prompt: number[], response: number[]) => ({ ids: [...prompt, ...response], promptLength: prompt.length });
  return { chosen: pairs.map((q) => row(q.prompt, q.chosen)), rejected: pairs.map((q) => row(q.prompt, q.rejected)) };
}

/** Tokens a padded batch of these rows processes (rows × longest) and how many of them are real. */
export function paddingOf(rows: readonly { ids: readonly number[] }[]): { processed: number; real: number; padding: number } {
  const longest = Math.max(...rows.map((r) => r.ids.length));
  const real = rows.reduce((s, r) => s + r.ids.length, 0);
  return { processed: rows.length * longest, real, padding: rows.length * longest - real };
}
